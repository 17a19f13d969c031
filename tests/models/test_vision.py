"""transformers vision encoders as noise-free backbones: tiny random DINOv2, CLIP and ViT saved with
save_pretrained (with their image processors), checked against the library's own
``output_hidden_states`` run on the processor's output.
"""

import numpy as np
import pytest
import torch
import transformers

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.data.base import ImageDataset, ImageSplit
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import VisionEncoderBackbone, load_backbone

SMALL = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, patch_size=4)


def _dinov2(root):
    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(image_size=16, **SMALL)).save_pretrained(root)
    transformers.BitImageProcessor(
        size={"shortest_edge": 20},
        crop_size={"height": 16, "width": 16},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(root)
    return transformers.Dinov2Model


def _clip(root):
    torch.manual_seed(1)
    config = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=99
        ),
        vision_config=dict(image_size=16, **SMALL),
        projection_dim=8,
    )
    transformers.CLIPModel(config).save_pretrained(root)
    transformers.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(
        root
    )
    return transformers.CLIPVisionModel


def _vit(root):
    torch.manual_seed(2)
    transformers.ViTModel(transformers.ViTConfig(image_size=16, **SMALL), add_pooling_layer=False).save_pretrained(root)
    transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(root)
    return transformers.ViTModel


@pytest.fixture(autouse=True)
def _own_rng():
    """The builders seed torch; keep the global generator as other tests left it."""
    with torch.random.fork_rng(devices=[]):
        yield


def _pixels(n=3, size=24, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size)).astype(np.float32))


@pytest.mark.parametrize("build", [_dinov2, _clip, _vit])
def test_blocks_equal_the_hidden_states_of_the_models_own_run(build, tmp_path):
    model_class = build(tmp_path)
    backbone = load_backbone(f"hf-vision:{tmp_path}")
    assert isinstance(backbone, VisionEncoderBackbone) and backbone.schedule.default_grid() == [0]
    names = [layer.name for layer in backbone.layers()]
    assert names == ["blocks.0", "blocks.1", "blocks.2"]
    pixels = _pixels()
    # Independent path: the saved processor on uint8 HWC images, the saved model with output_hidden_states.
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    images = [img for img in pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()]
    values = processor(images=images, return_tensors="pt")["pixel_values"]
    assert values.shape[-2:] == (16, 16)
    reference = model_class.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        hidden = reference(pixel_values=values, output_hidden_states=True).hidden_states
    x = backbone.encode(pixels)
    torch.testing.assert_close(x, values)
    point = backbone.schedule.point(0)
    cls = backbone.features(x, point, names, Pooling.parse("cls"))
    gap = backbone.features(x, point, names, Pooling.parse("gap"))
    for i, name in enumerate(names):
        np.testing.assert_allclose(cls[name].numpy(), hidden[i + 1][:, 0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gap[name].numpy(), hidden[i + 1][:, 1:].mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)


def test_extraction_runs_clean_with_cls_pooling(tmp_path):
    _vit(tmp_path / "vit")
    backbone = load_backbone(f"hf-vision:{tmp_path / 'vit'}")
    rng = np.random.default_rng(0)

    def split(n):
        return ImageSplit(
            images=rng.integers(0, 256, (n, 12, 12, 1), dtype=np.uint8), labels=np.arange(n) % 2, index=np.arange(n)
        )

    data = ImageDataset(name="toy", splits={"train": split(4), "test": split(2)}, class_names=["a", "b"], source="test")
    extract(backbone, data, tmp_path / "c.h5", ExtractConfig(pooling="cls", batch_size=3), progress=False)
    with FeatureCache(tmp_path / "c.h5") as cache:
        assert cache.complete and cache.timesteps == [0] and cache.attrs["pooling"] == "cls"
        assert cache.features("train", "blocks.2", 0).shape == (4, 16)


def test_errors_are_one_line(tmp_path):
    transformers.BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ProbekitError, match="'bert' model; hf-vision: loads"):
        load_backbone(f"hf-vision:{tmp_path / 'bert'}")
    transformers.ViTConfig(image_size=16, **SMALL).save_pretrained(tmp_path / "noproc")
    with pytest.raises(ProbekitError, match="no image processor"):
        load_backbone(f"hf-vision:{tmp_path / 'noproc'}")
    with pytest.raises(ProbekitError, match="cls pooling needs a class token"):
        Pooling.parse("cls")(torch.zeros(2, 3, 4, 4))


def _mae(root):
    """A ViTMAEForPreTraining checkpoint (the layout of facebook/vit-mae-*): encoder under ``vit.``."""
    torch.manual_seed(3)
    config = transformers.ViTMAEConfig(
        image_size=16,
        decoder_hidden_size=8,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
        **SMALL,
    )
    transformers.ViTMAEForPreTraining(config).save_pretrained(root)
    transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(root)


def test_mae_sees_every_patch_in_order_and_is_deterministic(tmp_path):
    _mae(tmp_path)
    backbone = load_backbone(f"hf-vision:{tmp_path}")
    names = [layer.name for layer in backbone.layers()]
    assert names == ["blocks.0", "blocks.1", "blocks.2"] and backbone.layers()[0].resolution == "17 tokens"
    encoder = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path).vit.eval()
    x = backbone.encode(_pixels(n=4))
    with torch.no_grad():
        assert encoder(pixel_values=x).last_hidden_state.shape[1] == 1 + 4  # MAE's own default keeps 25 % of 16 patches
        # By hand, no masking: patches + their position embeddings, the class token in front, then each block.
        emb = encoder.embeddings
        patches = emb.patch_embeddings(x) + emb.position_embeddings[:, 1:]
        cls = (emb.cls_token + emb.position_embeddings[:, :1]).expand(len(x), -1, -1)
        hidden, states = torch.cat([cls, patches], dim=1), []
        for block in encoder.layers:
            out = block(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
            states.append(hidden)
    point = backbone.schedule.point(0)
    cls_feats = backbone.features(x, point, names, Pooling.parse("cls"))
    gap_feats = backbone.features(x, point, names, Pooling.parse("gap"))
    torch.manual_seed(123)  # another global RNG state: nothing may depend on it
    again = backbone.features(x, point, names, Pooling.parse("gap"))
    for i, name in enumerate(names):
        np.testing.assert_allclose(cls_feats[name].numpy(), states[i][:, 0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gap_feats[name].numpy(), states[i][:, 1:].mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(again[name].numpy(), gap_feats[name].numpy())


@pytest.mark.parametrize("build", [_vit, _clip, _mae])
def test_random_init_is_the_same_architecture_seeded_without_the_weights(build, tmp_path):
    build(tmp_path / "trained")
    config = transformers.AutoConfig.from_pretrained(tmp_path / "trained")
    # A folder with only the config and the processor: nothing to load weights from.
    bare = tmp_path / "bare"
    config.save_pretrained(bare)
    transformers.AutoImageProcessor.from_pretrained(tmp_path / "trained").save_pretrained(bare)
    twin = load_backbone(f"hf-vision:{bare}", random_init=True, seed=5)
    assert twin.model_id == f"hf-vision:{bare} (random init, seed 5)"
    model_class = type(twin.net)
    vision_config = config.vision_config if config.model_type == "clip" else config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = model_class(vision_config).state_dict()
    state = twin.net.state_dict()
    assert state.keys() == expected.keys()
    for key in state:
        torch.testing.assert_close(state[key], expected[key], rtol=0, atol=0)
    trained = load_backbone(f"hf-vision:{tmp_path / 'trained'}")
    assert len(twin.layers()) == len(trained.layers())
    assert (
        twin.weights_sha256()
        == load_backbone(f"hf-vision:{tmp_path / 'trained'}", random_init=True, seed=5).weights_sha256()
    )
    assert twin.weights_sha256() not in (
        trained.weights_sha256(),
        load_backbone(f"hf-vision:{bare}", random_init=True, seed=6).weights_sha256(),
    )
    with pytest.raises(ProbekitError, match="cannot load the weights"):
        load_backbone(f"hf-vision:{bare}")


def test_mixed_image_sizes_are_decoded_at_the_processors_resize_side(tmp_path):
    """DINOv2's processor resizes the shorter side to 20 and crops 16: mixed sizes are decoded at 20 first."""
    from tests.data.test_resize import reference, write_mixed_folder

    model_class = _dinov2(tmp_path / "dino")
    paths = write_mixed_folder(tmp_path / "pets")
    backbone = load_backbone(f"hf-vision:{tmp_path / 'dino'}")
    assert backbone.image_size == 20
    from probekit.data import load_dataset

    dataset = load_dataset(str(tmp_path / "pets"))
    extract(backbone, dataset, tmp_path / "c.h5", ExtractConfig(pooling="cls", batch_size=4), progress=False)
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "dino")
    reference_model = model_class.from_pretrained(tmp_path / "dino").eval()
    with FeatureCache(tmp_path / "c.h5") as cache:
        assert cache.attrs["fit"]["resize"] == {
            **cache.attrs["fit"]["resize"],
            "size": 20,
            "chosen_by": "model input size",
        }
        index = cache.index("test")
        values = processor(images=[reference(paths[i], 20) for i in index], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = reference_model(pixel_values=values, output_hidden_states=True).hidden_states
        np.testing.assert_allclose(cache.features("test", "blocks.2", 0), hidden[3][:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_register_tokens_are_left_out_of_cls_and_gap(tmp_path):
    """DINOv2 with registers: tokens are [cls, 4 registers, patches]; pooled by hand from the model's own run."""
    torch.manual_seed(3)
    config = transformers.Dinov2WithRegistersConfig(image_size=16, num_register_tokens=4, **SMALL)
    transformers.Dinov2WithRegistersModel(config).save_pretrained(tmp_path)
    transformers.BitImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}).save_pretrained(
        tmp_path
    )
    backbone = load_backbone(f"hf-vision:{tmp_path}")
    names = [layer.name for layer in backbone.layers()]
    assert names == ["blocks.0", "blocks.1", "blocks.2"] and backbone.layers()[0].resolution == "21 tokens"
    x = backbone.encode(_pixels())
    reference = transformers.Dinov2WithRegistersModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        hidden = reference(pixel_values=x, output_hidden_states=True).hidden_states
    assert hidden[1].shape[1] == 1 + 4 + 16
    point = backbone.schedule.point(0)
    cls = backbone.features(x, point, names, Pooling.parse("cls"))
    gap = backbone.features(x, point, names, Pooling.parse("gap"))
    for i, name in enumerate(names):
        np.testing.assert_allclose(cls[name].numpy(), hidden[i + 1][:, 0].numpy(), rtol=1e-5, atol=1e-6)
        patches_only = hidden[i + 1][:, 5:].mean(dim=1).numpy()
        np.testing.assert_allclose(gap[name].numpy(), patches_only, rtol=1e-5, atol=1e-6)
        assert not np.allclose(gap[name].numpy(), hidden[i + 1][:, 1:].mean(dim=1).numpy(), atol=1e-4)
