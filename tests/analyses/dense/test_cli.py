"""The dense and label-budget commands through the command line: results, and one-line errors."""

import numpy as np
import pandas as pd
import pytest

from probekit.cli import main
from tests.analyses.dense.test_correspond import _translation_folder


def _run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pairs_extract_correspond_and_compare(tmp_path, capsys):
    root = _translation_folder(tmp_path / "pairs")
    code, _, err = _run(
        [
            "extract",
            "--model",
            "pixels",
            "--data",
            root,
            "--pooling",
            "spatial16",
            "--quiet",
            "--out",
            tmp_path / "p.h5",
        ],
        capsys,
    )
    assert code == 0, err
    code, out, err = _run(
        ["correspond", "--cache", tmp_path / "p.h5", "--data", root, "--out", tmp_path / "c.csv"], capsys
    )
    assert code == 0, err
    assert "pck=100.0 %" in out and (tmp_path / "c.dense.npz").is_file()
    code, out, _ = _run(["dense-compare", "--results", tmp_path / "c.csv", tmp_path / "c.csv", "--n-boot", 50], capsys)
    assert code == 0 and "difference +0.0 [+0.0, +0.0]" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pairs", "--out", "x"], "exactly one of --warp"),
        (
            ["probe", "--cache", "missing.h5", "--out", "r.csv", "--labels-per-class", "0,5"],
            "at least 1 label per class",
        ),
        (["segment", "--cache", "missing.h5", "--data", ".", "--out", "s.csv"], "classes.txt"),
        (["extract", "--model", "pixels", "--data", "digits", "--pooling", "spatial", "--out", "x.h5"], "spatialS"),
    ],
)
def test_bad_inputs_fail_in_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "s.csv").exists()


def test_label_budget_table_and_curve_through_the_cli(tmp_path, capsys):
    code, _, err = _run(
        ["extract", "--model", "pixels", "--data", "digits", "--quiet", "--out", tmp_path / "d.h5"], capsys
    )
    assert code == 0, err
    code, _, err = _run(
        [
            "probe",
            "--cache",
            tmp_path / "d.h5",
            "--probes",
            "linear",
            "--labels-per-class",
            "1,5,all",
            "--budget-draws",
            "2",
            "--quiet",
            "--out",
            tmp_path / "b.csv",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "b.csv")
    assert sorted(table["labels_per_class"].astype(str).unique()) == ["1", "5", "all"]
    code, _, err = _run(["plot", "--results", tmp_path / "b.csv", "--out", tmp_path / "fig"], capsys)
    assert code == 0, err
    assert (tmp_path / "fig" / "label_efficiency.png").is_file()
    summary = pd.read_csv(tmp_path / "fig" / "label_efficiency.csv")
    assert summary.set_index("labels_per_class").loc["1", "draws"] == 2
    assert np.all(summary["min"] <= summary["mean"]) and np.all(summary["mean"] <= summary["max"])
