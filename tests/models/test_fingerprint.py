"""The model fingerprint covers the weights and every config the loader reads.

On a tiny Stable Diffusion pipeline written in diffusers' layout: every field of every component
config changes the fingerprint, or is listed (with its reason) as changing no feature; edits of the
VAE's ``scaling_factor``, the scheduler's betas and the UNet's config each give a new fingerprint,
fresh latents and fresh features; resuming onto a cache of another fingerprint names the field.
"""

import json
import logging
import re
import shutil

import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone
from probekit.models.fingerprint import BOOKKEEPING, SCHEDULER_FIELDS_WITHOUT_EFFECT, describe_model, fingerprint
from tests.models.sd.conftest import _save, _unet, clip_text, vae

LAYERS = ["down_blocks.0", "mid_block"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from diffusers import DDPMScheduler

    root = tmp_path_factory.mktemp("sd")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        parts = {"unet": _unet(12), "vae": vae(), "text_encoder": clip_text(12)}
    _save(root, parts, "StableDiffusionPipeline")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    return root


def _dataset():
    rng = np.random.default_rng(0)
    split = lambda n: ImageSplit(
        rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8), (np.arange(n) % 2).astype(np.int64), np.arange(n)
    )
    return ImageDataset("toy", {"train": split(6), "test": split(4)}, ["a", "b"], "memory")


def _edited(pipe, tmp_path, relative, **changes):
    copy = tmp_path / f"edited-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(pipe, copy)
    path = copy / relative
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return copy


def _other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.01
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, (list, tuple)) and value:
        return [_other_value(value[0]), *value[1:]]
    return 7


def test_every_loaded_config_field_changes_the_fingerprint(pipe):
    """A field of a component's loaded config moves the fingerprint unless it is bookkeeping (listed with why)."""
    backbone = load_backbone(f"sd:{pipe}")
    base = fingerprint(describe_model(backbone))
    checked = 0
    for role, module in backbone._weight_modules().items():
        config = module.config
        raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        for key, value in raw.items():
            changed = _other_value(value)
            if hasattr(config, "to_dict"):  # transformers: attributes
                try:
                    setattr(config, key, changed)
                except (ValueError, AttributeError, TypeError):
                    continue  # a value transformers refuses to hold cannot reach a feature either
            else:  # diffusers: a frozen dict behind the module's config
                module._internal_dict = {**dict(config), key: changed}
            now = config.to_dict() if hasattr(config, "to_dict") else dict(module.config)
            if now.get(key) == value:  # derived from the class (transformers' model_type): cannot vary alone
                continue
            try:
                moved = fingerprint(describe_model(backbone)) != base
            finally:
                if hasattr(config, "to_dict"):
                    setattr(config, key, value)
                else:
                    module._internal_dict = config
            assert moved != (key in BOOKKEEPING), f"{role}.{key}"
            checked += 1
    assert checked > 60  # unet, vae and text encoder fields were all visited
    assert fingerprint(describe_model(backbone)) == base


@pytest.mark.slow
def test_every_scheduler_config_field_is_covered_or_listed(pipe, tmp_path):
    """Editing each field of scheduler_config.json: a new fingerprint, a refusal, or a listed field (no effect)."""
    base = load_backbone(f"sd:{pipe}").fingerprint()
    fields = json.loads((pipe / "scheduler" / "scheduler_config.json").read_text())
    for key, value in fields.items():
        if key in ("_class_name", "_diffusers_version"):
            continue  # not edited blindly: the class decides whether the config is read at all (below)
        replacement = {"beta_schedule": "linear", "timestep_spacing": "trailing", "prediction_type": "v_prediction"}
        changed = replacement.get(key, _other_value(value) if value is not None else [0.001] * 1000)
        edited = _edited(pipe, tmp_path, "scheduler/scheduler_config.json", **{key: changed})
        try:
            moved = load_backbone(f"sd:{edited}").fingerprint() != base
        except ProbekitError:
            continue  # refused at load: cannot be served silently either
        assert moved != (key in SCHEDULER_FIELDS_WITHOUT_EFFECT), key
    ddim = _edited(pipe, tmp_path, "scheduler/scheduler_config.json", _class_name="DDIMScheduler")
    assert load_backbone(f"sd:{ddim}").fingerprint() == base  # same training noise, listed as without effect


@pytest.mark.parametrize(
    ("relative", "change"),
    [
        ("vae/config.json", {"scaling_factor": 2 * 0.5}),
        ("scheduler/scheduler_config.json", {"beta_end": 0.02}),
        ("unet/config.json", {"norm_eps": 0.5}),
    ],
)
@pytest.mark.slow
def test_a_config_edit_gives_a_new_fingerprint_fresh_latents_and_fresh_features(
    pipe, tmp_path, caplog, relative, change
):
    config = ExtractConfig(timesteps=[10, 500], layers=LAYERS, batch_size=4, latent_cache=str(tmp_path / "lat"))
    extract(load_backbone(f"sd:{pipe}"), _dataset(), tmp_path / "before.h5", config, progress=False)
    edited = _edited(pipe, tmp_path, relative, **change)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="probekit"):
        extract(load_backbone(f"sd:{edited}"), _dataset(), tmp_path / "after.h5", config, progress=False)
    messages = [r.getMessage() for r in caplog.records]
    with FeatureCache(tmp_path / "before.h5") as before, FeatureCache(tmp_path / "after.h5") as after:
        assert before.attrs["model_sha256"] == after.attrs["model_sha256"]  # the same tensors
        assert before.attrs["model_fingerprint"] != after.attrs["model_fingerprint"]
        differs = [
            not np.array_equal(before.file[s]["feats"][layer][:], after.file[s]["feats"][layer][:])
            for s in ("train", "test")
            for layer in before.file[s]["feats"]
        ]
    assert any(differs)
    encoder_ran = next(m for m in messages if m.startswith("latents: encoder ran"))
    if relative.startswith("vae/"):  # the latents depend on the VAE's config: none reused
        assert "skipped for 0 " in encoder_ran
        assert re.search(r"\+ 10 image-view encodes", next(m for m in messages if m.startswith("work:")))
    else:  # the same VAE: its latents are reused, and the work line plans no encode
        assert "encoder ran on 0 image views" in encoder_ran
        assert "+ 0 image-view encodes" in next(m for m in messages if m.startswith("work:"))


def test_resume_onto_another_fingerprint_is_refused_naming_the_field(pipe, tmp_path, monkeypatch):
    backbone = load_backbone(f"sd:{pipe}")
    config = ExtractConfig(timesteps=[10], layers=LAYERS, batch_size=2, store_latents=False)
    calls = {"n": 0}
    original = backbone.features

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(backbone, "features", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    edited = _edited(pipe, tmp_path, "vae/config.json", scaling_factor=0.9)
    with pytest.raises(ProbekitError, match=r"different model \(configs\.vae\.scaling_factor\)"):
        extract(load_backbone(f"sd:{edited}"), _dataset(), tmp_path / "part.h5", config, progress=False)
