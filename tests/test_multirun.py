"""`probekit run` with several models: tiny models of two families (a diffusers UNet on a DDPM
schedule and a DiT pipeline) built here, the leaderboard recomputed with numpy and scipy from the
predictions sidecars, the shared baselines, and the list's settings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from probekit.core.errors import ProbekitError
from probekit.multirun import model_configs, plan_models
from probekit.pipeline import RunConfig
from tests.test_pipeline import _run_in, _tiny_dit_pipeline


@pytest.fixture(scope="module")
def toy_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 12 x 12 gray images told apart by brightness (in the npz dataset format)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    y, y_test = np.arange(90) % 3, np.arange(45) % 3
    x = (rng.integers(0, 120, size=(90, 12, 12)) + 60 * y[:, None, None]).astype(np.uint8)
    x_test = (rng.integers(0, 120, size=(45, 12, 12)) + 60 * y_test[:, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, class_names=np.array(["dark", "mid", "bright"]))
    return path


def _chosen(results: Path) -> tuple[int, str, float]:
    """(t, layer, val top-1) of the linear cell chosen on val, recomputed with pandas from the CSV."""
    table = pd.read_csv(results)
    val = table[(table["probe"] == "linear") & (table["metric"] == "top1") & (table["split"] == "val")]
    ranked = val.sort_values(["value", "t", "depth"], ascending=[False, True, True], kind="mergesort").iloc[0]
    return int(ranked["t"]), str(ranked["layer"]), float(ranked["value"])


def _correct(results: Path, t: int, layer: str) -> np.ndarray:
    preds = np.load(results.with_suffix(".predictions.npz"), allow_pickle=False)
    rows = [
        i
        for i, (p, tt, l) in enumerate(zip(preds["probe"], preds["t"], preds["layer"]))
        if (str(p), int(tt), str(l)) == ("linear", t, layer)
    ]
    assert len(rows) == 1
    return preds["predictions"][rows[0]] == preds["labels"]


@pytest.mark.slow
def test_two_families_in_one_run_give_a_leaderboard_recomputed_independently(tiny_unet_dir, toy_npz, tmp_path, capsys):
    dit = _tiny_dit_pipeline(tmp_path / "dit")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"models:\n  - name: unet\n    model: {tiny_unet_dir}\n    timesteps: [2, 60]\n"
        f"  - name: dit\n    model: {dit}\n    timesteps: [10, 200]\n"
        f"data: {toy_npz}\nout: run\nprobes: [linear]\npixels_probes: [linear]\nrandom_init_probes: [linear]\n"
        "layers: '0,-1'\nsimilarity: false\nfusion: false\ntsne: false\nn_boot: 300\nquiet: true\nbatch_size: 8\n"
    )
    out = _run_in(tmp_path, ["run", "--config", str(config)], capsys)
    run = tmp_path / "run"
    assert out.strip().splitlines()[-1] == "report: run/report.html"
    results = {
        "unet": run / "unet" / "results_unet.csv",
        "dit": run / "dit" / "results_dit.csv",
        "pixels": run / "results_pixels.csv",
        "random-init-unet": run / "results_random-init-unet.csv",
        "random-init-dit": run / "results_random-init-dit.csv",
    }
    assert all(path.is_file() for path in results.values())
    assert not (run / "unet" / "results_pixels.csv").exists()  # the baselines are computed once, in OUT
    board = pd.read_csv(run / "leaderboard.csv")
    board = board[board["probe"] == "linear"].set_index("name")
    assert set(board.index) == set(results)

    chosen = {name: _chosen(path) for name, path in results.items()}
    correct = {name: _correct(path, *chosen[name][:2]) for name, path in results.items()}
    best = max(results, key=lambda n: (chosen[n][2], correct[n].mean(), -list(results).index(n)))
    p_values = {}
    for name in results:
        row = board.loc[name]
        assert (int(row["t"]), row["layer"]) == chosen[name][:2]
        assert row["test_top1"] == pytest.approx(correct[name].mean(), abs=1e-12)
        assert row["best"] == best
        assert row["ci_low"] <= row["test_top1"] <= row["ci_high"]
        if name == best:
            continue
        a, b = correct[name], correct[best]
        only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
        assert (row["only_this"], row["only_best"]) == (only_a, only_b)
        assert row["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
        p_values[name] = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert row["p_value"] == pytest.approx(p_values[name], rel=1e-9)
    # Holm by hand: sorted ascending, the i-th (from 0) times (m - i), running maximum, capped at 1
    names = sorted(p_values, key=p_values.get)
    running = 0.0
    for i, name in enumerate(names):
        running = max(running, min(1.0, (len(names) - i) * p_values[name]))
        assert board.loc[name, "p_holm"] == pytest.approx(running, rel=1e-9)
    # the ranks follow test top-1
    ranked = board.sort_values("rank")
    assert list(ranked["test_top1"]) == sorted(ranked["test_top1"], reverse=True)

    page = (run / "report.html").read_text()
    assert "Models compared" in page and "against log-SNR" in page
    data = page.split('id="probekit-data">', 1)[1].split("</script>", 1)[0]
    figures = json.loads(data.replace("<\\/", "</"))["figures"]
    curves = [f for f in figures.values() if "against log-SNR" in json.dumps(f.get("layout", {}).get("title", {}))]
    assert len(curves) == 1
    traces = {t["name"]: t for t in curves[0]["data"]}
    for name in ("unet", "dit"):  # each model's best-layer curve sits at its recorded log-SNR, not its t
        table = pd.read_csv(results[name])
        recorded = sorted({v for v in table["logsnr"] if math.isfinite(v)}, reverse=True)
        assert traces[f"{name} (best layer per level)"]["x"] == pytest.approx(recorded)


def _config(**values) -> RunConfig:
    return RunConfig(data="d", out="o", **values)


def test_each_model_of_the_list_gets_its_folder_and_its_own_grid():
    configs = model_configs(
        _config(
            models=[
                "a=x/folder",
                "dit:ckpt.pt?heads=3&vae=none",
                {"model": "y", "name": "b", "timesteps": "1,4", "random-init-timesteps": 2},
            ],
            timesteps=[0, 5],
        )
    )
    assert [c.label for c in configs] == ["a", "ckpt", "b"]
    assert [c.model for c in configs] == ["x/folder", "dit:ckpt.pt?heads=3&vae=none", "y"]
    assert [c.timesteps for c in configs] == [[0, 5], [0, 5], [1, 4]]
    assert configs[2].random_init_timesteps == [2] and configs[0].random_init_timesteps == [0]
    assert configs[0].out == str(Path("o") / "a") and configs[0].cache_dir == str(Path("o") / "caches" / "a")


def test_baselines_are_computed_by_the_first_model_that_needs_them():
    runs = plan_models(
        _config(models=["a=u1", "b=t1", "c=u2"]), key=lambda c: "unet" if c.model.startswith("u") else "dit"
    )
    assert [r.twin for r in runs] == ["random-init-a", "random-init-b", "random-init-a"]
    assert [sorted(r.borrowed) for r in runs] == [[], ["pixels"], ["pixels", "random-init"]]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (["a=x", "a=y"], "given twice"),
        (["x"], "two or more"),
        ([{"model": "x", "probes": ["knn"]}, "y"], "unknown setting"),
        ([{"name": "x"}, "y"], "has no `model:`"),
        (["pixels=x", "y"], "cannot name a folder"),
    ],
)
def test_bad_model_lists_are_one_line_errors(models, message):
    with pytest.raises(ProbekitError, match=message):
        model_configs(_config(models=models))


def test_a_yaml_list_under_model_is_the_list_of_models(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: [a=x, b=y]\ndata: d\nout: o\n")
    config = RunConfig.from_sources(str(path), {})
    assert config.models == ["a=x", "b=y"] and config.model == ""
    with pytest.raises(ProbekitError, match="not both"):
        RunConfig.from_sources(str(path), {"model": "z"})


def test_a_repeated_model_flag_is_the_list_and_replaces_the_files_model(tmp_path, monkeypatch, capsys):
    import probekit.multirun
    from probekit.cli import main

    seen: list[RunConfig] = []
    monkeypatch.setattr(probekit.multirun, "run_models", lambda config, execute: seen.append(config) or Path("r"))
    path = tmp_path / "run.yaml"
    path.write_text("model: z\ndata: d\nout: o\n")
    assert main(["run", "--config", str(path), "--model", "a=x", "--model", "b=y"]) == 0
    assert seen[0].models == ["a=x", "b=y"] and seen[0].model == ""
