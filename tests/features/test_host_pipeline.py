"""The host pipeline: features are bit for bit the same for any number of workers, shard and
resume point, on a folder of JPEGs of mixed sizes (decoded lazily, resized, augmented); the
network's inputs are bit for bit the same for any batch size.

The network itself is not batch-invariant on the CPU: the same image in a batch of 3 and of 4
comes out of the tiny UNet's forward up to 1 float32 ulp apart (2-4e-7, measured with oneDNN on
and off), so features across batch sizes are compared to that tolerance, and the shard test uses
batches that match the serial run's.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.transforms import fit_images
from probekit.features.cache import FeatureCache
from probekit.features.distributed import shard_dataset
from probekit.features.extraction import ExtractConfig, extract
from probekit.features.host_pipeline import Converter, auto_workers, host_batches
from probekit.models import load_backbone

LAYER = "mid_block"
SIZES = [(20, 15), (15, 20), (24, 18), (17, 17)]


def _jpeg_folder(root, n_train=10, n_test=10):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            folder = root / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            width, height = SIZES[i % len(SIZES)]
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                folder / f"{i}.jpg", quality=90
            )
    return root


def _features(path):
    with FeatureCache(path) as cache:
        return {
            f"{split}/{layer.name}": cache.file[split]["feats"][layer.name][:]
            for split in ("train", "test")
            for layer in cache.layers
        }


def _config(**changes):
    return ExtractConfig(
        **{"timesteps": [5, 40], "layers": [LAYER], "views": 1, "batch_size": 5, "image_size": 16, **changes}
    )


@pytest.fixture(scope="module")
def reference(tiny_unet_dir, tmp_path_factory):
    root = _jpeg_folder(tmp_path_factory.mktemp("jpegs"))
    out = tmp_path_factory.mktemp("ref") / "serial.h5"
    extract(load_backbone(str(tiny_unet_dir)), load_dataset(str(root)), out, _config(workers=0), progress=False)
    return root, _features(out)


def test_two_workers_give_identical_features(tiny_unet_dir, reference, tmp_path):
    root, expected = reference
    out = tmp_path / "w2.h5"
    extract(load_backbone(str(tiny_unet_dir)), load_dataset(str(root)), out, _config(workers=2), progress=False)
    got = _features(out)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    assert expected["train/mid_block.resnets.1"].shape[1] == 2  # the clean view and one augmented view


@pytest.mark.slow
def test_two_workers_give_identical_features_in_bf16(tiny_unet_dir, reference, tmp_path):
    """The run-to-run comparison in bf16 as well (the suite pins auto to fp32)."""
    root, _ = reference
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"bf16-w{workers}.h5"
        config = _config(workers=workers, precision="bf16")
        extract(load_backbone(str(tiny_unet_dir)), load_dataset(str(root)), out, config, progress=False)
        runs[workers] = _features(out)
    for key in runs[0]:
        np.testing.assert_array_equal(runs[2][key], runs[0][key])


@pytest.mark.slow
def test_another_batch_size_agrees_to_the_forwards_rounding(tiny_unet_dir, reference, tmp_path):
    root, expected = reference
    out = tmp_path / "b3.h5"
    extract(
        load_backbone(str(tiny_unet_dir)),
        load_dataset(str(root)),
        out,
        _config(workers=1, batch_size=3),
        progress=False,
    )
    got = _features(out)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_shards_with_workers_concatenate_to_the_serial_features(tiny_unet_dir, reference, tmp_path):
    root, expected = reference
    backbone = load_backbone(str(tiny_unet_dir))
    parts = []
    for rank in range(2):
        out = tmp_path / f"rank{rank}.h5"
        extract(backbone, shard_dataset(load_dataset(str(root)), rank, 2), out, _config(workers=2), progress=False)
        parts.append(_features(out))
    for key in expected:
        np.testing.assert_array_equal(np.concatenate([part[key] for part in parts], axis=2), expected[key])


@pytest.mark.slow
def test_resume_with_workers_gives_the_serial_features(tiny_unet_dir, reference, tmp_path, monkeypatch):
    root, expected = reference
    backbone = load_backbone(str(tiny_unet_dir))
    original, calls = backbone.features, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1 + 1 * 2 * 2:  # the width probe, then one batch x two grid points x two views
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(backbone, "features", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(backbone, load_dataset(str(root)), tmp_path / "part.h5", _config(workers=2), progress=False)
    monkeypatch.setattr(backbone, "features", original)
    with FeatureCache(tmp_path / "part.h5") as cache:
        assert not cache.complete and cache.progress("train") == (5, 10)
    extract(backbone, load_dataset(str(root)), tmp_path / "part.h5", _config(workers=2), progress=False)
    got = _features(tmp_path / "part.h5")
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_a_corrupt_image_in_a_worker_is_a_one_line_error(tiny_unet_dir, tmp_path):
    root = _jpeg_folder(tmp_path / "data")
    victim = root / "test" / "c1" / "3.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])  # the header survives, the pixels do not
    with pytest.raises(ProbekitError, match=r"^cannot decode image .*3\.jpg") as err:
        extract(
            load_backbone(str(tiny_unet_dir)),
            load_dataset(str(root)),
            tmp_path / "f.h5",
            _config(workers=2),
            progress=False,
        )
    assert "\n" not in str(err.value)


def test_batches_arrive_in_order_converted_as_fit_images_does_whatever_the_batch_size(tmp_path):
    root = _jpeg_folder(tmp_path / "data")
    split = load_dataset(str(root)).splits["train"].at_size(16)
    convert = Converter((32, 32), 3, (-1.0, 1.0), "pad")
    cpu = torch.device("cpu")
    bounds = [(0, 3), (3, 7), (8, 10)]
    got = list(host_batches(split, bounds, 2, seed=0, split_name="train", convert=convert, device=cpu, workers=2))
    assert [(batch.start, batch.stop) for batch, _ in got] == bounds
    for (batch, views), (start, stop) in zip(got, bounds):
        expected, _ = fit_images(
            split.read(slice(start, stop)), size=32, channels=3, value_range=(-1.0, 1.0), fit="pad"
        )
        assert torch.equal(views[0], expected) and views[1].shape == expected.shape
        np.testing.assert_array_equal(batch.ids, split.index[start:stop])
    singles = list(
        host_batches(
            split,
            [(i, i + 1) for i in range(10)],
            2,
            seed=0,
            split_name="train",
            convert=convert,
            device=cpu,
            workers=0,
        )
    )
    by_sample = {int(batch.ids[0]): views for batch, views in singles}
    for batch, views in got:
        for row, sample in enumerate(batch.ids.tolist()):
            for view in range(2):
                assert torch.equal(views[view][row], by_sample[sample][view][0])


def test_auto_workers_decodes_in_the_main_process_only_when_nothing_needs_decoding(tmp_path):
    dataset = load_dataset(str(_jpeg_folder(tmp_path / "data")))
    assert auto_workers(list(dataset.splits.values())) >= 1
    in_memory = dataset.splits["train"]
    in_memory = type(in_memory)(
        in_memory.read(slice(None)) if not in_memory.mixed_sizes else in_memory.at_size(8).read(slice(None)),
        in_memory.labels,
        in_memory.index,
    )
    assert auto_workers([in_memory]) == 0
    with pytest.raises(ProbekitError, match="--workers must be 0"):
        extract(load_backbone("pixels"), dataset, tmp_path / "f.h5", _config(workers=-1, layers=None), progress=False)
    assert not (tmp_path / "f.h5").exists()
