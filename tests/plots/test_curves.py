import numpy as np
import pandas as pd
import pytest

from probekit.core.errors import ProbekitError
from probekit.plots import plot_accuracy_vs_t


@pytest.mark.parametrize("x", ["t", "sigma", "logsnr"])
def test_each_x_axis(table, tmp_path, check_png, x):
    check_png(plot_accuracy_vs_t(table, "linear", "top1", tmp_path / f"acc_{x}.png", x=x))


def test_layer_subset(table, tmp_path, check_png):
    layers = ["up_blocks.0.resnets.0", "up_blocks.2.resnets.0"]
    check_png(plot_accuracy_vs_t(table, "knn", out_path=tmp_path / "sub.png", layers=layers))


@pytest.mark.parametrize("n_layers", [15, 60])  # legend outside; depth colour bar instead
def test_many_layers(table_factory, tmp_path, check_png, n_layers):
    table = table_factory(n_layers=n_layers)
    check_png(plot_accuracy_vs_t(table, "linear", out_path=tmp_path / f"many{n_layers}.png"))


def test_unknown_layer_raises(table, tmp_path):
    with pytest.raises(ProbekitError, match="not in the table"):
        plot_accuracy_vs_t(table, "linear", out_path=tmp_path / "x.png", layers=["nope"])


def test_unknown_x_raises(table, tmp_path):
    with pytest.raises(ProbekitError, match="x must be"):
        plot_accuracy_vs_t(table, "linear", out_path=tmp_path / "x.png", x="snr")


@pytest.mark.parametrize("x, words", [("sigma", "σ = ∞ (zero terminal SNR"), ("logsnr", "−∞ (zero terminal SNR")])
def test_zero_terminal_snr_point_is_named_not_drawn(table, tmp_path, monkeypatch, x, words):
    import math

    import probekit.plots.curves as curves

    pure = table[table["t"] == 600].copy()
    pure[["t", "sigma", "logsnr", "alpha_bar"]] = [999, math.inf, -math.inf, 0.0]
    pure["value"] = 0.1  # never the chosen cell
    drawn = {}
    real_save = curves.save_figure
    monkeypatch.setattr(curves, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and real_save(fig, path))
    curves.plot_accuracy_vs_t(pd.concat([table, pure]), "linear", "top1", tmp_path / "acc.png", x=x)
    ax = drawn["fig"].axes[0]
    assert any(words in text.get_text() for text in ax.texts)
    assert all(np.isfinite(line.get_xdata()).all() for line in ax.lines)
