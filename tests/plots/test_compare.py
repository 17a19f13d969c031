import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.plots import comparison_lines, plot_all, plot_model_comparison
from tests.plots.conftest import assert_png, make_table


def test_each_model_gets_its_best_layer_across_noise():
    table = make_table(models=("ddpm", "edm"), probes=("linear",))
    lines = comparison_lines(table, "linear", x="t")
    top1 = table[table["metric"] == "top1"]
    for model in ("ddpm", "edm"):
        own = top1[top1["model"] == model]
        val = own[own["split"] == "val"]
        best_layer = val.loc[val["value"].idxmax(), "layer"]  # chosen on val
        line = lines[f"{model} ({best_layer})"]
        expected = own[(own["layer"] == best_layer) & (own["split"] == "test")].sort_values("t")
        np.testing.assert_array_equal(line["t"].to_numpy(), expected["t"].to_numpy())
        np.testing.assert_allclose(line["value"].to_numpy(), expected["value"].to_numpy())
    # sigma axis: the clean point (sigma 0) cannot sit on the log axis
    assert all(0 not in line["sigma"].to_numpy() for line in comparison_lines(table, "linear", x="sigma").values())
    with pytest.raises(ProbekitError, match="x must be one of"):
        comparison_lines(table, "linear", x="snr")


def test_overlay_written_by_plot_all_for_several_models(tmp_path):
    table = make_table(models=("ddpm", "dit"), probes=("linear",))
    paths = plot_all(table, tmp_path, x="logsnr")
    assert tmp_path / "compare_acc_vs_logsnr_linear.png" in paths
    assert_png(tmp_path / "compare_acc_vs_logsnr_linear.png")
    assert_png(plot_model_comparison(table, "linear", tmp_path / "c.png", x="sigma"))


def test_t_axis_is_refused_when_t_means_different_noise():
    table = make_table(models=("ddpm", "edm"), probes=("linear",))
    other = table["model"] == "edm"
    shifted = table.copy()
    shifted.loc[other, "sigma"] = shifted.loc[other, "sigma"] * 2  # same t, another noise level
    with pytest.raises(ProbekitError, match="t means different noise levels for ddpm and edm.*--x sigma"):
        comparison_lines(shifted, "linear", x="t")
    assert comparison_lines(shifted, "linear", x="sigma")  # the shared axes still work
    # disjoint grids whose sigmas do not grow together with t (a 0..999 index beside a 1..18 one)
    renumbered = table.copy()
    ts = sorted(renumbered.loc[other, "t"].unique())
    renumbered.loc[other, "t"] = renumbered.loc[other, "t"].map({t: 10_000 - i for i, t in enumerate(ts)})
    with pytest.raises(ProbekitError, match="do not grow together"):
        comparison_lines(renumbered, "linear", x="t")
