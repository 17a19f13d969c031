import pytest

from probekit.core.errors import ProbekitError
from probekit.plots import plot_heatmap


def test_heatmap_is_written_as_png(table, tmp_path, check_png):
    path = plot_heatmap(table, "linear", "top1", tmp_path / "figs" / "heat.png")
    assert path == tmp_path / "figs" / "heat.png"
    check_png(path)


def test_heatmap_of_mean_class_recall(table, tmp_path, check_png):
    check_png(plot_heatmap(table, "knn", "mean_class_recall", tmp_path / "mcr.png"))


def test_large_grid_is_drawn_without_annotations(table_factory, tmp_path, check_png):
    table = table_factory(n_layers=45)
    check_png(plot_heatmap(table, "linear", out_path=tmp_path / "big.png"))


def test_missing_cells_stay_blank(table, tmp_path, check_png):
    sparse = table.drop(index=table.index[::7])
    check_png(plot_heatmap(sparse, "linear", out_path=tmp_path / "sparse.png"))


def test_several_models_need_a_choice(table_factory, tmp_path, check_png):
    table = table_factory(models=("ddpm", "edm"))
    with pytest.raises(ProbekitError, match="model="):
        plot_heatmap(table, "linear", out_path=tmp_path / "x.png")
    check_png(plot_heatmap(table, "linear", out_path=tmp_path / "edm.png", model="edm"))


def test_unknown_probe_raises(table, tmp_path):
    with pytest.raises(ProbekitError, match="no rows"):
        plot_heatmap(table, "mlp", out_path=tmp_path / "x.png")
