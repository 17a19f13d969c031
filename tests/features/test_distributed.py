"""Sharded extraction: shard slices, the virtual master file, and a real 2-process torchrun (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from probekit.cli import main
from probekit.features.cache import FeatureCache
from probekit.features.distributed import shard_bounds, shard_dataset, shard_path, write_master
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone
from tests.features.test_extraction import LAYERS, _dataset

pytestmark = [pytest.mark.subprocess]


def test_shard_bounds_cover_every_sample_once():
    for n, world in [(10, 3), (7, 7), (1000, 4)]:
        ranges = [shard_bounds(n, r, world) for r in range(world)]
        covered = np.concatenate([np.arange(a, b) for a, b in ranges])
        np.testing.assert_array_equal(covered, np.arange(n))
    assert shard_path("out/feats.h5", 1, 4).name == "feats.rank1-of-4.h5"


def _read_all(path):
    with FeatureCache(path) as cache:
        return cache.complete, {
            (s, name): cache.file[s][name][:]
            for s in cache.splits
            for name in ["labels", "index", "done", *[f"feats/{l.name}" for l in cache.layers]]
        }


def test_master_over_shards_reads_like_one_cache(tiny_unet_dir, tmp_path, monkeypatch):
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0, 25], layers=LAYERS, draws=2, batch_size=8)
    extract(backbone, _dataset(), tmp_path / "single.h5", config, progress=False)
    shards = [tmp_path / "shards" / f"s{r}.h5" for r in range(3)]
    shards[0].parent.mkdir()
    for r, path in enumerate(shards):
        extract(backbone, shard_dataset(_dataset(), r, 3), path, config, progress=False)
    write_master(tmp_path / "shards" / "master.h5", shards)

    monkeypatch.chdir(tmp_path)  # shard names are relative to the master file, not the working folder
    complete, merged = _read_all(tmp_path / "shards" / "master.h5")
    single_complete, single = _read_all(tmp_path / "single.h5")
    assert complete and single_complete and merged.keys() == single.keys()
    for key in single:
        np.testing.assert_allclose(merged[key], single[key], rtol=1e-5, atol=1e-6)
    with h5py.File(tmp_path / "shards" / "master.h5", "r") as f:
        assert f["train/feats/mid_block.resnets.1"].is_virtual


def test_master_of_an_unfinished_shard_is_not_complete(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0], layers=LAYERS)
    shards = [tmp_path / f"s{r}.h5" for r in range(2)]
    for r, path in enumerate(shards):
        extract(backbone, shard_dataset(_dataset(), r, 2), path, config, progress=False)
    with h5py.File(shards[1], "r+") as f:
        f.attrs["complete"] = False
        f["test/done"][0] = 0
    write_master(tmp_path / "m.h5", shards)
    with FeatureCache(tmp_path / "m.h5") as cache:
        assert not cache.complete and cache.progress("test")[0] == 8


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tiny_unet_dir, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "toy.npz"
    np.savez(
        data,
        x=rng.integers(0, 256, (30, 12, 12), dtype=np.uint8),
        y=np.arange(30) % 3,
        x_test=rng.integers(0, 256, (11, 12, 12), dtype=np.uint8),
        y_test=np.arange(11) % 3,
    )
    argv = [
        "extract",
        "--model",
        str(tiny_unet_dir),
        "--data",
        str(data),
        "--timesteps",
        "3,60",
        "--layers",
        "0,mid_block,-1",
        "--batch-size",
        "4",
        "--quiet",
    ]
    assert main([*argv, "--out", str(tmp_path / "single.h5")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "probekit",
            *argv,
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "multi.h5"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout and "over 2 shards" in done.stdout
    assert sorted(p.name for p in tmp_path.glob("multi*")) == ["multi.h5", "multi.rank0-of-2.h5", "multi.rank1-of-2.h5"]
    complete, merged = _read_all(tmp_path / "multi.h5")
    _, single = _read_all(tmp_path / "single.h5")
    assert complete and merged.keys() == single.keys()
    for key in single:
        np.testing.assert_allclose(merged[key], single[key], rtol=1e-5, atol=1e-6)


def test_shards_of_a_folder_dataset_stay_lazy(tmp_path):
    from probekit.data import load_dataset
    from tests.data.formats import write_image

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):  # a/00 .. a/04, b/05 .. b/09: load order is i
        write_image(tmp_path / "ds" / "train" / "ab"[i // 5] / f"{i:02d}.png", image)
        write_image(tmp_path / "ds" / "test" / "ab"[i // 5] / f"{i:02d}.png", image)
    dataset = load_dataset(str(tmp_path / "ds"))
    parts = [shard_dataset(dataset, r, 3).splits["train"] for r in range(3)]
    assert all(part.lazy for part in parts)
    np.testing.assert_array_equal(np.concatenate([p.index for p in parts]), np.arange(10))
    for part in parts:
        np.testing.assert_array_equal(part.read(slice(None)), pixels[part.index])


def _hash_rank(rank, folder, init_file, counts):
    import torch.distributed as dist

    import probekit.models.backbone as backbone_module
    from probekit.features.distributed import share_weight_hashes

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    calls = {"n": 0}
    original = backbone_module.state_dict_sha256
    backbone_module.state_dict_sha256 = lambda module: (calls.__setitem__("n", calls["n"] + 1), original(module))[1]
    backbone = load_backbone(folder)
    backbone.weights_key = None  # nothing remembered: any hash here is computed in this process
    share_weight_hashes(backbone)
    counts[rank] = (calls["n"], backbone.weights_sha256())
    dist.destroy_process_group()


@pytest.mark.slow
def test_only_rank_zero_hashes_the_weights(tiny_unet_dir, tmp_path):
    import torch.multiprocessing as mp

    from probekit.models.backbone import state_dict_sha256

    counts = mp.Manager().dict()
    mp.spawn(_hash_rank, args=(str(tiny_unet_dir), str(tmp_path / "init"), counts), nprocs=2)
    expected = state_dict_sha256(load_backbone(str(tiny_unet_dir)).net)
    assert counts[0] == (1, expected) and counts[1] == (0, expected)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_and_two_nodes(argv: list[str], single_out: Path, multi_out: Path, rdzv_id: str) -> list[str]:
    """Run ``probekit ARGV`` once as one process and once as two c10d "nodes" on localhost (one
    thread each); returns the nodes' stdout.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "probekit", *argv, "--out", str(single_out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{_free_port()}",
        "--rdzv_id",
        rdzv_id,
        "-m",
        "probekit",
        *argv,
        "--out",
        str(multi_out),
    ]
    nodes = [
        subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-2000:]
    return [out for out, _ in outputs]


@pytest.mark.slow
def test_two_nodes_c10d_on_localhost_equal_one_process(tiny_unet_dir, tmp_path):
    """Two torchrun launchers (--nnodes 2, one process each) meeting through a c10d rendezvous, as
    two machines of a cluster would, write the cache a single process writes, bit for bit.
    """
    rng = np.random.default_rng(1)
    data = tmp_path / "toy.npz"
    # Shard boundaries on batch boundaries (24 = 2 x 12 = 2 x 3 batches of 4; 8 = 2 x 4): both runs
    # then push the same batches through the network. A batch cut differently by a shard boundary
    # can move a feature by one float32 ulp (convolution kernels vary with the batch size).
    np.savez(
        data,
        x=rng.integers(0, 256, (24, 12, 12), dtype=np.uint8),
        y=np.arange(24) % 3,
        x_test=rng.integers(0, 256, (8, 12, 12), dtype=np.uint8),
        y_test=np.arange(8) % 3,
    )
    argv = [
        "extract",
        "--model",
        str(tiny_unet_dir),
        "--data",
        str(data),
        "--timesteps",
        "3,60",
        "--layers",
        "0,mid_block,-1",
        "--batch-size",
        "4",
        "--quiet",
        "--device",
        "cpu",
    ]
    outputs = _single_and_two_nodes(argv, tmp_path / "single.h5", tmp_path / "multi.h5", "probekit-two-nodes")
    assert any("over 2 shards" in out for out in outputs)
    complete, merged = _read_all(tmp_path / "multi.h5")
    _, expected = _read_all(tmp_path / "single.h5")
    assert complete and merged.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(merged[key], expected[key])


@pytest.mark.slow
def test_two_nodes_c10d_probe_gives_the_single_process_table(tmp_path):
    """`probekit probe` under two c10d launchers (--nnodes 2): cells shared over the ranks, one
    table and one prediction file written by rank 0, equal to a single process's bit for bit.
    """
    from tests.probes.test_probe_memory import synthetic_cache

    cache = synthetic_cache(tmp_path / "c.h5", 900, 300, [16, 32, 16], timesteps=(0, 10, 50), classes=4, separation=0.3)
    argv = ["probe", "--cache", str(cache), "--probes", "linear,knn", "--C", "0.1,1", "--quiet", "--device", "cpu"]
    _single_and_two_nodes(argv, tmp_path / "single.csv", tmp_path / "multi.csv", "probekit-probe")
    assert (tmp_path / "multi.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()
    a, b = np.load(tmp_path / "single.predictions.npz"), np.load(tmp_path / "multi.predictions.npz")
    assert a.files == b.files
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])
