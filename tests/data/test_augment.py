import numpy as np

from probekit.data.augment import crop_flip_views


def test_views_are_shifted_or_flipped_crops_keyed_by_sample_and_view():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 255, size=(6, 10, 10, 1), dtype=np.uint8)  # no zero pixel inside
    ids = np.arange(100, 106)
    out = crop_flip_views(images, ids, seed=1, split="train", view=1)
    assert out.shape == images.shape and out.dtype == np.uint8
    for img, aug in zip(images, out):
        padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
        found = any(
            np.array_equal(
                aug, (padded[dy : dy + 10, dx : dx + 10][:, ::-1] if flip else padded[dy : dy + 10, dx : dx + 10])
            )
            for dy in range(9)
            for dx in range(9)
            for flip in (0, 1)
        )
        assert found
    # a pure function of (seed, split, sample id, view): batch order and composition do not matter
    alone = crop_flip_views(images[3:4], ids[3:4], seed=1, split="train", view=1)
    assert np.array_equal(alone[0], out[3])
    assert not np.array_equal(crop_flip_views(images, ids, seed=1, split="train", view=2), out)
