import math

import numpy as np
import pandas as pd
import pytest

from probekit.core.errors import ProbekitError
from probekit.evaluate.metrics import CellScore
from probekit.evaluate.results import (
    COLUMNS,
    CellInfo,
    best_cells,
    format_summary,
    read_table,
    scores_to_table,
    write_table,
)

N_TEST = 200


def _score(top1: float, mcr: float) -> CellScore:
    return CellScore(top1=top1, mean_class_recall=mcr, n_test=N_TEST, predictions=np.zeros(N_TEST, dtype=np.int64))


@pytest.fixture
def cells():
    # t=0 is the clean input: sigma 0, logSNR +inf.
    infos = {}
    for t, sigma, logsnr, alpha_bar in [(0, 0.0, math.inf, 1.0), (100, 0.34, 2.16, 0.897), (500, 2.1, -1.48, 0.185)]:
        for depth, layer in enumerate(["down.0", "mid", "up.1"]):
            stage = layer.split(".")[0]
            infos[(t, layer)] = CellInfo(t, sigma, logsnr, alpha_bar, layer, stage, depth)
    return infos


@pytest.fixture
def scores(cells):
    rng = np.random.default_rng(0)
    out = {}
    for probe in ["linear", "knn"]:
        # Multiples of 1/N_TEST so that top1 * n_test is a whole number of correct answers.
        out[probe] = {
            key: {
                "val": _score(rng.integers(20, 190) / N_TEST, rng.uniform(0.1, 0.9)),
                "test": _score(rng.integers(20, 190) / N_TEST, rng.uniform(0.1, 0.9)),
            }
            for key in cells
        }
    return out


@pytest.fixture
def table(scores, cells):
    return scores_to_table(scores, cells, model="ddpm-cifar10", dataset="cifar10", n_train=5000)


def test_columns_and_row_count(table, cells, scores):
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == len(cells) * len(scores) * 2 * 2
    assert set(table["metric"]) == {"top1", "mean_class_recall"}
    assert set(table["split"]) == {"val", "test"}
    assert (table["n_train"] == 5000).all() and (table["n_eval"] == N_TEST).all()


def test_values_and_intervals(table, scores):
    row = table[
        (table["probe"] == "knn") & (table["t"] == 100) & (table["layer"] == "mid") & (table["split"] == "test")
    ]
    top1 = row[row["metric"] == "top1"].iloc[0]
    score = scores["knn"][(100, "mid")]["test"]
    assert top1["value"] == score.top1
    # Wilson 95 % interval written out independently.
    z, n, p = 1.96, N_TEST, score.top1
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert top1["ci_low"] == pytest.approx(centre - half)
    assert top1["ci_high"] == pytest.approx(centre + half)
    mcr = row[row["metric"] == "mean_class_recall"].iloc[0]
    assert mcr["value"] == score.mean_class_recall
    assert math.isnan(mcr["ci_low"]) and math.isnan(mcr["ci_high"])
    assert row.iloc[0][["sigma", "alpha_bar", "stage", "depth"]].tolist() == [0.34, 0.897, "mid", 1]


def test_best_cells_is_the_val_argmax_reported_on_test(table):
    best = best_cells(table)
    assert len(best) == 2
    top1 = table[table["metric"] == "top1"]
    for probe, rows in top1.groupby("probe"):
        val = rows[rows["split"] == "val"]
        chosen = val.loc[val["value"].idxmax()]
        test_row = rows[
            (rows["split"] == "test") & (rows["t"] == chosen["t"]) & (rows["layer"] == chosen["layer"])
        ].iloc[0]
        got = best[best["probe"] == probe].iloc[0]
        assert (got["t"], got["layer"], got["value"], got["split"]) == (
            chosen["t"],
            chosen["layer"],
            test_row["value"],
            "test",
        )
        assert got["val_value"] == chosen["value"] and got["chosen_on"] == "val"


def test_selection_ignores_a_higher_test_cell(table):
    table = table.copy()
    top1 = table["metric"] == "top1"
    table.loc[top1, "value"] = 0.5
    # val prefers (100, mid); test would prefer (500, up.1)
    table.loc[top1 & (table["split"] == "val") & (table["t"] == 100) & (table["layer"] == "mid"), "value"] = 0.8
    table.loc[top1 & (table["split"] == "test") & (table["t"] == 500) & (table["layer"] == "up.1"), "value"] = 0.9
    best = best_cells(table)
    assert set(zip(best["t"], best["layer"])) == {(100, "mid")}
    assert (best["value"] == 0.5).all()
    on_test = best_cells(table, choose_on="test")
    assert set(zip(on_test["t"], on_test["layer"])) == {(500, "up.1")}
    text = format_summary(table)
    assert "the test-best cell differs: t=500 up.1 at 90.0 %" in text


def test_without_val_rows_the_choice_is_on_test_and_said(table):
    test_only = table[table["split"] == "test"]
    best = best_cells(test_only)
    assert (best["chosen_on"] == "test").all()
    assert "CHOSEN ON TEST" in format_summary(test_only)


def test_best_cells_breaks_ties_by_lower_t_then_lower_depth(table):
    table = table.copy()
    top1 = table["metric"] == "top1"
    table.loc[top1, "value"] = 0.5
    winners = [(500, "down.0"), (100, "up.1"), (100, "mid")]
    for t, layer in winners:
        table.loc[top1 & (table["t"] == t) & (table["layer"] == layer), "value"] = 0.9
    best = best_cells(table)
    assert set(zip(best["t"], best["layer"])) == {(100, "mid")}


def test_csv_round_trip_keeps_inf_and_nan(table, tmp_path):
    path = write_table(table, tmp_path / "out" / "results.csv")
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["results.csv"]  # no temp file left
    back = read_table(path)
    pd.testing.assert_frame_equal(back, table)
    assert np.isposinf(back.loc[back["t"] == 0, "logsnr"]).all()


def test_read_table_names_missing_column(table, tmp_path):
    path = tmp_path / "broken.csv"
    table.drop(columns=["sigma"]).to_csv(path, index=False)
    with pytest.raises(ProbekitError, match="sigma.*not a probekit results table"):
        read_table(path)


def test_read_table_missing_file(tmp_path):
    with pytest.raises(ProbekitError, match="does not exist"):
        read_table(tmp_path / "nope.csv")


def test_format_summary_names_best_cell_per_probe(table):
    text = format_summary(table)
    best = best_cells(table).set_index("probe")
    assert text.splitlines()[0] == "ddpm-cifar10 on cifar10"
    for probe in ["linear", "knn"]:
        b = best.loc[probe]
        line = next(line for line in text.splitlines() if line.strip().startswith(probe))
        assert f"t={b['t']} " in line and f" {b['layer']} " in line
        assert f"val {100 * b['val_value']:.1f} %" in line
        assert f"top1={100 * b['value']:.1f} %" in line
        assert f"[{100 * b['ci_low']:.1f}, {100 * b['ci_high']:.1f}]" in line


def test_unknown_cell_key_raises(scores, cells):
    cells = dict(cells)
    cells.pop((0, "mid"))
    with pytest.raises(KeyError, match="no CellInfo"):
        scores_to_table(scores, cells, model="m", dataset="d", n_train=1)
