from probekit.plots import plot_all


def test_one_model(table, tmp_path, check_png):
    paths = plot_all(table, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["acc_vs_t_knn.png", "acc_vs_t_linear.png", "heatmap_knn.png", "heatmap_linear.png"]
    for path in paths:
        check_png(path)


def test_several_models_are_prefixed(table_factory, tmp_path):
    table = table_factory(models=("ddpm/cifar10 ema", "edm"), probes=("linear",))
    names = sorted(p.name for p in plot_all(table, tmp_path))
    assert names == [
        "compare_acc_vs_t_linear.png",
        "ddpm_cifar10_ema_acc_vs_t_linear.png",
        "ddpm_cifar10_ema_heatmap_linear.png",
        "edm_acc_vs_t_linear.png",
        "edm_heatmap_linear.png",
    ]
