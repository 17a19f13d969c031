import torch

from probekit.core.noise import noise_seed, sample_noise


def test_noise_depends_only_on_seed_sample_t_draw():
    ids = [3, 17, 42, 99, 1000]
    together = sample_noise((1, 4, 4), ids, seed=5, t=10, draw=0)
    one_by_one = torch.cat([sample_noise((1, 4, 4), [i], seed=5, t=10, draw=0) for i in reversed(ids)]).flip(0)
    assert torch.equal(together, one_by_one)


def test_each_of_the_four_numbers_changes_the_noise():
    base = sample_noise((16,), [7], seed=0, t=10, draw=0)
    for kwargs in ({"seed": 1, "t": 10, "draw": 0}, {"seed": 0, "t": 11, "draw": 0}, {"seed": 0, "t": 10, "draw": 1}):
        assert not torch.allclose(base, sample_noise((16,), [7], **kwargs))
    assert not torch.allclose(base, sample_noise((16,), [8], seed=0, t=10, draw=0))
    assert noise_seed(0, 1, 2, 3) != noise_seed(0, 1, 3, 2)


def test_noise_is_standard_normal():
    noise = sample_noise((1, 32, 32), range(200), seed=0, t=1, draw=0)
    assert abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 1) < 0.01


def test_splits_get_unrelated_noise_streams():
    from probekit.core.noise import split_seed

    assert split_seed(0, "train") != split_seed(0, "test")
    assert not torch.allclose(
        sample_noise((8,), [0], seed=split_seed(0, "train"), t=1, draw=0),
        sample_noise((8,), [0], seed=split_seed(0, "test"), t=1, draw=0),
    )
