"""SD 1.x / 2.x and SDXL UNets: features checked against hand-written calls of the diffusers UNet on
the same latents, with the text conditioning (and SDXL's added_cond_kwargs) built by hand.
"""

import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.models import load_backbone
from probekit.models.sd import StableDiffusionBackbone
from tests.models.sd.conftest import SCALE, clip_ids


def _images(n=2, seed=1):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _hooked_call(unet, modules, *args, **kwargs):
    """Run ``unet`` once and return the primary output tensor of each named sub-module."""
    captured, handles = {}, []
    for name in modules:

        def hook(_m, _a, out, name=name):
            captured[name] = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)

        handles.append(unet.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            unet(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


LAYERS = ["mid_block", "down_blocks.0.attentions.0"]


def test_features_equal_a_hand_written_unet_call(sd_pipe):
    root, parts = sd_pipe
    backbone = load_backbone(f"sd:{root}")
    assert isinstance(backbone, StableDiffusionBackbone) and backbone.input_size == (16, 16)
    assert backbone.framework == "stable-diffusion" and backbone.time_ids is None
    assert backbone.prediction_type == "v_prediction" and backbone.schedule.beta_schedule == "scaled_linear"
    images = _images()
    with torch.no_grad():
        latents = parts["vae"].encode(images).latent_dist.mean * SCALE
        context = parts["text_encoder"](clip_ids("")).last_hidden_state.expand(2, -1, -1)
    torch.testing.assert_close(backbone.encode(images), latents)
    captured = _hooked_call(
        parts["unet"],
        ["mid_block", "down_blocks.0.attentions.0"],
        latents,
        torch.full((2,), 300.0),
        encoder_hidden_states=context,
    )
    feats = backbone.features(latents, backbone.schedule.point(300), LAYERS, Pooling())
    for name in LAYERS:
        np.testing.assert_allclose(feats[name].numpy(), captured[name].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    names = [layer.name for layer in backbone.layers()]
    assert "down_blocks.0.resnets.0" in names and "up_blocks.1.attentions.0" in names
    assert backbone.cache_attrs() == {"prompt": ""}


def test_class_prompt_picks_each_samples_embedding(sd_pipe):
    root, parts = sd_pipe
    backbone = load_backbone(f"sd:{root}")
    backbone.set_prompt("a photo of a {class}", ["cat", "dog", "bird"])
    labels = torch.tensor([2, 0, 2])
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        rows = {
            name: parts["text_encoder"](clip_ids(f"a photo of a {name}")).last_hidden_state for name in ("cat", "bird")
        }
    context = torch.cat([rows["bird"], rows["cat"], rows["bird"]])
    captured = _hooked_call(
        parts["unet"], ["mid_block"], latents, torch.full((3,), 40.0), encoder_hidden_states=context
    )
    feats = backbone.features(latents, backbone.schedule.point(40), ["mid_block"], Pooling(), labels=labels)
    np.testing.assert_allclose(
        feats["mid_block"].numpy(), captured["mid_block"].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )
    empty = load_backbone(f"sd:{root}").features(latents, backbone.schedule.point(40), ["mid_block"], Pooling())
    assert not torch.allclose(empty["mid_block"], feats["mid_block"])  # the prompt reaches the UNet
    assert backbone.cache_attrs() == {"prompt": "a photo of a {class}"}
    with pytest.raises(ProbekitError, match="pass each sample's class label"):
        backbone.features(latents, backbone.schedule.point(40), ["mid_block"], Pooling())
    with pytest.raises(ProbekitError, match="labels outside 0..2"):
        backbone.features(
            latents, backbone.schedule.point(40), ["mid_block"], Pooling(), labels=torch.tensor([0, 1, 3])
        )


@pytest.mark.slow
def test_sdxl_features_equal_a_hand_written_call_with_added_conditioning(sdxl_pipe):
    root, parts = sdxl_pipe
    backbone = load_backbone(f"sd:{root}")
    assert backbone.framework == "stable-diffusion-xl" and backbone.input_size == (16, 16)
    images = _images(3)
    ids = clip_ids("")
    with torch.no_grad():
        latents = parts["vae"].encode(images).latent_dist.mean * SCALE
        first = parts["text_encoder"](ids, output_hidden_states=True).hidden_states[-2]
        second = parts["text_encoder_2"](ids, output_hidden_states=True)
        context = torch.cat([first, second.hidden_states[-2]], dim=-1).expand(3, -1, -1)  # (3, 12, 12 + 20)
        pooled = second.text_embeds.expand(3, -1)  # (3, 8)
    time_ids = torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]]).expand(3, -1)  # original size, crop, target size
    names = ["down_blocks.0.attentions.0", "up_blocks.1.resnets.1"]
    captured = _hooked_call(
        parts["unet"],
        names,
        latents,
        torch.full((3,), 500.0),
        encoder_hidden_states=context,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
    )
    feats = backbone.features(latents, backbone.schedule.point(500), names, Pooling.parse("avg2"))
    for name in names:
        expected = captured[name].reshape(3, -1, 2, captured[name].shape[2] // 2, 2, captured[name].shape[3] // 2)
        expected = expected.mean(dim=(3, 5)).flatten(1)
        np.testing.assert_allclose(feats[name].numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_sdxl_class_prompt_conditions_the_pooled_embedding_too(sdxl_pipe):
    root, parts = sdxl_pipe
    backbone = load_backbone(f"sd:{root}")
    backbone.set_prompt("{class}", ["cat", "dog"])
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = [
            (
                parts["text_encoder"](clip_ids(w), output_hidden_states=True),
                parts["text_encoder_2"](clip_ids(w), output_hidden_states=True),
            )
            for w in ("dog", "cat")
        ]
    context = torch.cat([torch.cat([a.hidden_states[-2], b.hidden_states[-2]], dim=-1) for a, b in out])
    pooled = torch.cat([b.text_embeds for _, b in out])
    time_ids = torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]]).expand(2, -1)
    captured = _hooked_call(
        parts["unet"],
        ["mid_block"],
        latents,
        torch.full((2,), 10.0),
        encoder_hidden_states=context,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
    )
    feats = backbone.features(
        latents, backbone.schedule.point(10), ["mid_block"], Pooling(), labels=torch.tensor([1, 0])
    )
    np.testing.assert_allclose(
        feats["mid_block"].numpy(), captured["mid_block"].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )


def test_random_init_sdxl_differs_and_hashes_every_part(sdxl_pipe):
    root, _ = sdxl_pipe
    trained, fresh = load_backbone(f"sd:{root}"), load_backbone(f"sd:{root}", random_init=True, seed=3)
    assert "random init" in fresh.model_id
    assert trained.weights_sha256() != fresh.weights_sha256()
    assert set(trained._weight_modules()) == {"unet", "vae", "text_encoder", "text_encoder_2"}


def test_sdxl_without_second_tokenizer_or_first_encoder_is_refused(sdxl_pipe, tmp_path):
    import shutil

    root, _ = sdxl_pipe
    for missing, message in (("tokenizer_2", "lacks tokenizer_2/"), ("text_encoder", "no text_encoder/")):
        copy = tmp_path / missing
        shutil.copytree(root, copy)
        shutil.rmtree(copy / missing)
        with pytest.raises(ProbekitError, match=message):
            load_backbone(f"sd:{copy}")


def test_missing_parts_are_one_line(tmp_path):
    with pytest.raises(ProbekitError, match="holds nothing, not a diffusers pipeline: sd: needs a pipeline folder"):
        load_backbone(f"sd:{tmp_path}")


@pytest.mark.slow
def test_random_init_draws_a_fresh_unet_and_keeps_the_vae_and_text_encoder(sd_pipe, tmp_path):
    """--random-init re-initialises the denoiser only: same latents, same empty-prompt conditioning."""
    import shutil

    from diffusers import UNet2DConditionModel

    root, parts = sd_pipe
    bare = tmp_path / "pipe"
    shutil.copytree(root, bare)
    for weights in (bare / "unet").glob("diffusion_pytorch_model.*"):
        weights.unlink()  # the UNet's config only: its weights must not be needed
    twin = load_backbone(f"sd:{bare}", random_init=True, seed=5)
    assert twin.model_id == f"sd:{bare} (random init, seed 5)"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = UNet2DConditionModel.from_config(parts["unet"].config).state_dict()
    state = twin.net.state_dict()
    assert state.keys() == expected.keys() == parts["unet"].state_dict().keys()
    for key in state:
        torch.testing.assert_close(state[key], expected[key], rtol=0, atol=0)
    assert any(not torch.equal(state[key], parts["unet"].state_dict()[key]) for key in state)
    for mine, saved in ((twin.vae, parts["vae"]), (twin.text.encoder, parts["text_encoder"])):
        for key, value in saved.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    images = _images()
    with torch.no_grad():
        latents = parts["vae"].encode(images).latent_dist.mean * SCALE
    torch.testing.assert_close(twin.encode(images), latents)
    again = load_backbone(f"sd:{bare}", random_init=True, seed=5)
    point = twin.schedule.point(100)
    first, second = (b.features(latents, point, ["mid_block"], Pooling())["mid_block"] for b in (twin, again))
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    other = load_backbone(f"sd:{bare}", random_init=True, seed=6)
    trained = load_backbone(f"sd:{root}")
    assert twin.weights_sha256() == again.weights_sha256()
    assert twin.weights_sha256() not in (trained.weights_sha256(), other.weights_sha256())
    with pytest.raises(ProbekitError, match="cannot load a Stable Diffusion pipeline"):
        load_backbone(f"sd:{bare}")  # without --random-init the missing UNet weights are an error
