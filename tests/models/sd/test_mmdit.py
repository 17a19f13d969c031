"""SD3 (MMDiT): features checked against a hand-written SD3Transformer2DModel call on the same
latents, the conditioning assembled by hand as the SD3 pipeline does, pooled by hand.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.models import load_backbone
from probekit.models.sd import SD3Backbone
from tests.models.sd.conftest import SCALE, SHIFT, clip_ids

NAMES = ["transformer_blocks.0", "transformer_blocks.2"]  # the last block returns no text tokens


def _image_tokens(net, names, latents, timestep, context, pooled):
    """The image-token stream after each named block: the second entry of its (text, image) output."""
    captured, handles = {}, []
    for name in names:
        handles.append(
            net.get_submodule(name).register_forward_hook(
                lambda _m, _a, out, name=name: captured.__setitem__(name, out[1])
            )
        )
    try:
        with torch.no_grad():
            net(
                hidden_states=latents,
                encoder_hidden_states=context,
                pooled_projections=pooled,
                timestep=torch.full((latents.shape[0],), timestep),
            )
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _clips(parts, text):
    with torch.no_grad():
        a = parts["text_encoder"](clip_ids(text), output_hidden_states=True)
        b = parts["text_encoder_2"](clip_ids(text), output_hidden_states=True)
    return torch.cat([a.hidden_states[-2], b.hidden_states[-2]], dim=-1), torch.cat(
        [a.text_embeds, b.text_embeds], dim=-1
    )


@pytest.mark.slow
def test_features_equal_a_hand_written_transformer_call(sd3_pipe):
    root, parts = sd3_pipe
    backbone = load_backbone(f"sd:{root}")
    assert isinstance(backbone, SD3Backbone) and backbone.framework == "stable-diffusion-3"
    assert backbone.input_size == (16, 16)
    assert [layer.resolution for layer in backbone.layers()] == ["16 tokens"] * 3  # (8 / patch 2)^2
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = (parts["vae"].encode(images).latent_dist.mean - SHIFT) * SCALE
    torch.testing.assert_close(backbone.encode(images), latents)

    clip, pooled = _clips(parts, "")  # (1, 12, 4 + 8), (1, 6 + 10)
    context = torch.cat([F.pad(clip, (0, 16 - 12)), torch.zeros(1, 256, 16)], dim=1)  # no T5: 256 zero tokens
    # flow matching at t = 300: x_t = 0.7 x + 0.3 eps, and the transformer reads timestep 300 (shift 3 not applied)
    point = backbone.schedule.point(300)
    assert point.model_input == pytest.approx(300.0) and point.sigma == pytest.approx(0.3 / 0.7)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
    x_t = backbone.schedule.add_noise(latents, noise, point)
    torch.testing.assert_close(x_t, 0.7 * latents + 0.3 * noise)
    tokens = _image_tokens(parts["transformer"], NAMES, x_t, 300.0, context.expand(2, -1, -1), pooled.expand(2, -1))

    gap = backbone.features(x_t, point, NAMES, Pooling())
    avg2 = backbone.features(x_t, point, ["layer-0", "layer-2"], Pooling.parse("avg2"))
    for name, alias in zip(NAMES, ["layer-0", "layer-2"]):
        hidden = tokens[name].numpy()  # (2, 16 tokens, 8)
        np.testing.assert_allclose(gap[name].numpy(), hidden.mean(axis=1), rtol=1e-5, atol=1e-6)
        grid = hidden.reshape(2, 2, 2, 2, 2, 8)  # (B, row block, row, col block, col, C) of the 4 x 4 token grid
        expected = grid.mean(axis=(2, 4)).transpose(0, 3, 1, 2).reshape(2, -1)  # channel-major 2 x 2
        np.testing.assert_allclose(avg2[alias].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_t5_conditioning_and_class_prompt(sd3_t5_pipe):
    root, parts = sd3_t5_pipe
    backbone = load_backbone(f"sd:{root}")
    assert set(backbone._weight_modules()) == {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"}
    backbone.set_prompt("a photo of a {class}", ["cat", "dog"])
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    contexts, pooleds = [], []
    for word_ids, name in (([3, 4, 5, 3, 7], "dog"), ([3, 4, 5, 3, 6], "cat")):  # word-level T5 ids, padded with 0
        clip, pooled = _clips(parts, f"a photo of a {name}")
        with torch.no_grad():
            t5 = parts["text_encoder_3"](torch.tensor([word_ids + [0] * (256 - 5)]))[0]
        contexts.append(torch.cat([F.pad(clip, (0, 4)), t5], dim=1))
        pooleds.append(pooled)
    tokens = _image_tokens(
        parts["transformer"], ["transformer_blocks.1"], latents, 50.0, torch.cat(contexts), torch.cat(pooleds)
    )
    feats = backbone.features(
        latents, backbone.schedule.point(50), ["transformer_blocks.1"], Pooling(), labels=torch.tensor([1, 0])
    )
    np.testing.assert_allclose(
        feats["transformer_blocks.1"].numpy(), tokens["transformer_blocks.1"].mean(dim=1).numpy(), rtol=1e-5, atol=1e-6
    )


def test_unknown_layer_and_foreign_transformer_are_one_line(sd3_pipe, tmp_path):
    import json
    import shutil

    root, _ = sd3_pipe
    backbone = load_backbone(f"sd:{root}")
    with pytest.raises(ProbekitError, match=r"SD3 transformer layers are transformer_blocks.0..2"):
        backbone.features(torch.zeros(1, 4, 8, 8), backbone.schedule.point(0), ["transformer_blocks.3"], Pooling())
    copy = tmp_path / "hunyuan"
    shutil.copytree(root, copy)
    config = json.loads((copy / "transformer" / "config.json").read_text())
    (copy / "transformer" / "config.json").write_text(json.dumps({**config, "_class_name": "HunyuanDiT2DModel"}))
    with pytest.raises(ProbekitError, match="HunyuanDiT2DModel transformer: sd: reads SD3 .*Flux .*PixArt"):
        load_backbone(f"sd:{copy}")


def test_random_init_keeps_the_architecture(sd3_pipe):
    root, _ = sd3_pipe
    fresh = load_backbone(f"sd:{root}", random_init=True, seed=1)
    assert "random init" in fresh.model_id and len(fresh.layers()) == 3
    assert fresh.weights_sha256() != load_backbone(f"sd:{root}").weights_sha256()
