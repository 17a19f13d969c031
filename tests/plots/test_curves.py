import pytest

from probekit.errors import ProbekitError
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
