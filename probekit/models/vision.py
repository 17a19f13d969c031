"""Hugging Face ``transformers`` vision encoders (DINOv2, CLIP vision, ViT, MAE) as noise-free references.

Spec: ``hf-vision:FOLDER_OR_HUB_ID`` -- a folder written by ``save_pretrained`` (config.json, weights
and the image processor's preprocessor_config.json), or a hub id. A full CLIP checkpoint loads its
vision tower.

Inputs: images are handed over as 0..255 pixels (3 channels, native size) and the model's own
image processor does the rest, once per image: its resize, centre crop, rescale and
normalisation. The grid is the single clean point ``t = 0`` (no noise).

Layers: ``blocks.i`` (alias ``layer-i``), the hidden states after transformer block ``i``, stage
``block``, ``hidden_size`` channels, ``N tokens`` (class token, register tokens and patches).
Pooling: ``cls`` is the class token (first token); ``gap`` is the mean over the patch tokens
(class and register tokens left out).

MAE (``ViTMAEModel``) drops 75 % of the patches at random in every forward, as in pretraining. Here
it sees every patch in its own order: the mask ratio is set to 0 and the shuffle noise is the patch
index (``0, 1, ..., N-1``), so the argsort that MAE shuffles by is the identity and two runs agree
bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from probekit.core.errors import ProbekitError, first_line
from probekit.core.pooling import Pooling
from probekit.core.schedule import CleanSchedule
from probekit.core.types import GridPoint, LayerInfo
from probekit.models.backbone import HookedBackbone
from probekit.models.options import LoadOptions
from probekit.models.random_init import model_id, seeded
from probekit.models.sources import folder_contents, require_existing_folder

PREFIX = "hf-vision:"
#: model_type -> the transformers class that loads its vision encoder
_FAMILIES = {
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "vit": "ViTModel",
    "vit_mae": "ViTMAEModel",
    "clip_vision_model": "CLIPVisionModel",
    "clip": "CLIPVisionModel",
}
#: model_type -> config values set at load time (MAE: keep every patch)
_CONFIG_OVERRIDES = {"vit_mae": {"mask_ratio": 0.0}}


class VisionEncoderBackbone(HookedBackbone):
    """A transformers vision encoder read block by block; ``t`` is always 0 (clean inputs)."""

    framework = "hf-vision"
    value_range = (0.0, 255.0)  # raw pixel values: the image processor rescales them itself
    input_size = None
    input_channels = 3

    def __init__(self, net: nn.Module, processor: object, blocks: nn.ModuleList, model_id: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.processor = processor
        self.schedule = CleanSchedule()
        self.model_id = model_id
        config = net.config
        # Tokens before the patches: the class token, plus DINOv2's register tokens when present.
        self.prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        side = _crop_side(processor)
        patches = (side // int(config.patch_size)) ** 2 if side else 0
        tokens = f"{patches + self.prefix_tokens} tokens" if patches else "tokens"
        layers = [
            LayerInfo(f"blocks.{i}", "block", i, int(config.hidden_size), tokens, aliases=(f"layer-{i}",))
            for i in range(len(blocks))
        ]
        self._register({layer.name: block for layer, block in zip(layers, blocks)}, layers)

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixel values 0..255 -> the processor's ``pixel_values`` (resized, cropped, normalised)."""
        pixels = x0.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        batch = self.processor(images=list(pixels), return_tensors="pt")["pixel_values"]
        return batch.to(device=x0.device, dtype=torch.float32)

    @property
    def image_size(self) -> int | None:
        """The side the processor resizes to: images of mixed sizes are decoded to it (shorter
        side, centre crop), and the processor then crops and normalises them as it does any image.
        """
        return _resize_side(self.processor)

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.net.config.model_type == "vit_mae":
            # Ascending noise: MAE's argsort keeps the patches in order (and mask_ratio 0 keeps them all).
            patches = self.net.embeddings.patch_embeddings.num_patches
            noise = torch.arange(patches, device=x.device, dtype=torch.float32).expand(x.shape[0], -1)
            return self.net(pixel_values=x, noise=noise)
        return self.net(pixel_values=x)

    def _pool(self, pooling: Pooling) -> Callable[[torch.Tensor], torch.Tensor]:
        if pooling.cls:
            return lambda hidden: hidden[:, 0].float()  # float32 under autocast, as Pooling does
        prefix = self.prefix_tokens
        return lambda hidden: pooling(hidden[:, prefix:])

    def _weight_modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def configs(self) -> dict[str, object]:
        """The encoder's config and the image processor's settings (resize, crop, mean and std)."""
        processor = self.processor.to_dict() if hasattr(self.processor, "to_dict") else {"repr": repr(self.processor)}
        return {**super().configs(), "processor": processor}

    def weights_sha256(self) -> str:
        """Weights and the preprocessing both decide the features: the hash covers the processor's settings."""
        if self._sha256 is None:
            weights = super().weights_sha256()
            settings = (
                self.processor.to_json_string() if hasattr(self.processor, "to_json_string") else repr(self.processor)
            )
            self._sha256 = hashlib.sha256(f"{weights}|{settings}".encode()).hexdigest()
        return self._sha256

    def _unknown_layer(self, name: str) -> str:
        return f"unknown layer {name!r}: this encoder's layers are blocks.0..{len(self._layers) - 1} (or layer-i)"


def _crop_side(processor: object) -> int | None:
    """The side of the square the processor produces, when it says so."""
    for key in ("crop_size", "size"):
        value = getattr(processor, key, None)
        if hasattr(value, "get"):  # a dict, or transformers' SizeDict
            value = value.get("height") or value.get("shortest_edge")
        if isinstance(value, int):
            if key == "crop_size" and not getattr(processor, "do_center_crop", True):
                continue
            return value
    return None


def _resize_side(processor: object) -> int | None:
    """The processor's resize target when it is one side (shortest edge) or a square."""
    size = getattr(processor, "size", None)
    if isinstance(size, int):
        return size
    if hasattr(size, "get"):  # a dict, or transformers' SizeDict
        if isinstance(size.get("shortest_edge"), int):
            return size["shortest_edge"]
        if size.get("height") is not None and size.get("height") == size.get("width"):
            return int(size["height"])
    return None


def _block_list(net: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks: its path differs between families and transformers releases
    (``encoder.layer``, ``layers``, ``vision_model.encoder.layers``), its length does not.
    """
    depth = int(net.config.num_hidden_layers)
    for name, module in net.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) == depth
            and name.rsplit(".", 1)[-1] in ("layer", "layers")
        ):
            return module
    raise ProbekitError(
        f"cannot find the {depth} transformer blocks of this {type(net).__name__}: it is not a supported layout"
    )


def recognises(spec: str) -> bool:
    return spec.startswith(PREFIX)


def load_vision(spec: str, options: LoadOptions) -> VisionEncoderBackbone:
    """Load ``hf-vision:SOURCE`` (a save_pretrained folder or a hub id) with its image processor."""
    try:
        import transformers
    except ImportError:
        raise ProbekitError("hf-vision: models need the transformers package: pip install 'probekit[vision]'") from None

    source = spec[len(PREFIX) :]
    if not source:
        raise ProbekitError(f"{spec!r} names no model: write hf-vision:FOLDER or hf-vision:OWNER/NAME")
    require_existing_folder(
        source,
        PREFIX,
        "a folder saved with save_pretrained (config.json, weights, preprocessor_config.json), or a hub id OWNER/NAME",
    )
    local = Path(source).expanduser().is_dir()
    if local and not (Path(source).expanduser() / "config.json").is_file():
        raise ProbekitError(
            f"{source} holds {folder_contents(Path(source).expanduser())}, but no config.json: hf-vision: needs a "
            "folder "
            "saved with save_pretrained (config.json, weights and preprocessor_config.json)"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        where = "folder" if local else "hub id"
        raise ProbekitError(f"cannot read a transformers config from {where} {source!r}: {first_line(err)}") from err
    family = _FAMILIES.get(config.model_type)
    if family is None:
        raise ProbekitError(
            f"{source!r} is a {config.model_type!r} model; hf-vision: loads {', '.join(sorted(_FAMILIES))}"
        )
    model_class = getattr(transformers, family)
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ProbekitError(
            f"{source!r} has no image processor (preprocessor_config.json): save one beside the model with "
            f"processor.save_pretrained, so its resolution and normalisation are known"
        ) from err
    overrides = _CONFIG_OVERRIDES.get(config.model_type, {})
    if options.random_init:
        vision_config = config.vision_config if config.model_type == "clip" else config
        for key, value in overrides.items():
            setattr(vision_config, key, value)
        with seeded(options.seed):
            net = model_class(vision_config)
    else:
        try:
            net = model_class.from_pretrained(source, **overrides)
        except (OSError, ValueError) as err:
            raise ProbekitError(f"cannot load the weights of {source!r}: {first_line(err)}") from err
    blocks = _block_list(net)
    return VisionEncoderBackbone(net, processor, blocks, model_id(spec, options.random_init, options.seed))
