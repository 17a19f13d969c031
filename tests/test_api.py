import probekit


def test_every_public_name_resolves():
    for name in probekit.__all__:
        assert getattr(probekit, name) is not None


def test_python_api_end_to_end(tmp_path):
    data = probekit.load_dataset("digits")
    data.splits["train"] = probekit.stratified_subset(data.splits["train"], 300, seed=0)
    path = probekit.extract(
        probekit.load_backbone("pixels"), data, tmp_path / "p.h5", probekit.ExtractConfig(), progress=False
    )
    table = probekit.run_probes(path, probekit.ProbeRunConfig(probes=("knn",)), progress=False)
    # 10 % of the 300 train images are held out for validation
    assert set(table["probe"]) == {"knn"} and table["n_train"].iloc[0] == 270
    assert table[table.split == "val"]["n_eval"].iloc[0] == 30
    # digits pixels are easy: a 20-NN cosine vote is far above chance (10 %)
    assert table[(table.metric == "top1") & (table.split == "test")]["value"].item() > 0.85
