"""``sd:FOLDER_OR_HUB_ID`` -> the Backbone of that Stable Diffusion pipeline's generation.

The pipeline's parts decide which: a ``transformer/`` folder is SD3 (``SD3Transformer2DModel``);
otherwise the ``unet/`` is SD 1.x / 2.x, or SDXL when ``text_encoder_2/`` is there too.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.schedule import DDPMSchedule, FlowMatchingSchedule
from probekit.models.options import LoadOptions, quiet_diffusers
from probekit.models.random_init import model_id as twin_id
from probekit.models.random_init import seeded
from probekit.models.sd.mmdit import SD3Backbone
from probekit.models.sd.text import CLIPText, SD3Text, SDXLText, TextConditioning
from probekit.models.sd.unet import StableDiffusionBackbone
from probekit.models.sources import folder_contents, require_existing_folder

PREFIX = "sd:"
#: the grid of SD3's flow-matching schedule: t = 0..1000, noise fraction t / 1000
SD3_STEPS = 1000


def recognises(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _components(source: str) -> set[str]:
    """The pipeline's parts: a folder's sub-folders, or the non-empty entries of a hub repo's model_index.json."""
    path = Path(source).expanduser()
    if path.is_dir():
        return {child.name for child in path.iterdir() if child.is_dir()}
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(source)
    return {
        name for name, value in index.items() if isinstance(value, (list, tuple)) and value and value[0] is not None
    }


def _network(cls: type, source: str, subfolder: str, options: LoadOptions) -> nn.Module:
    if options.random_init:
        with seeded(options.seed):
            return cls.from_config(cls.load_config(source, subfolder=subfolder))
    return cls.from_pretrained(source, subfolder=subfolder)


def _tokenizer(source: str, subfolder: str) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, subfolder=subfolder)


def _require(source: str, parts: set[str], needed: tuple[str, ...], what: str) -> None:
    missing = [name for name in needed if name not in parts]
    if missing:
        raise ProbekitError(
            f"cannot load a Stable Diffusion pipeline from {source!r}: this {what} pipeline lacks "
            f"{', '.join(f'{name}/' for name in missing)}; give a complete pipeline folder or hub id"
        )


def _unet_text(source: str, parts: set[str]) -> TextConditioning:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if "text_encoder" not in parts:
        raise ProbekitError(
            f"cannot load a Stable Diffusion pipeline from {source!r}: it has no text_encoder/: sd: needs the "
            "pipeline's first text encoder (SDXL refiners, with "
            "text_encoder_2 only, are not supported)"
        )
    first = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
    if "text_encoder_2" not in parts:
        return CLIPText(_tokenizer(source, "tokenizer"), first)
    _require(source, parts, ("tokenizer", "tokenizer_2"), "SDXL")
    second = CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2")
    return SDXLText([_tokenizer(source, "tokenizer"), _tokenizer(source, "tokenizer_2")], [first, second])


def _load_unet(source: str, parts: set[str], options: LoadOptions, model_id: str) -> StableDiffusionBackbone:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    _require(source, parts, ("unet", "vae", "scheduler"), "SD 1.x/2.x/XL")
    unet = _network(UNet2DConditionModel, source, "unet", options)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    scheduler = dict(DDPMScheduler.load_config(source, subfolder="scheduler"))
    return StableDiffusionBackbone(
        unet,
        vae,
        _unet_text(source, parts),
        DDPMSchedule.from_config(scheduler),
        model_id,
        prediction_type=str(scheduler.get("prediction_type", "epsilon")),
    )


def _load_sd3(source: str, parts: set[str], options: LoadOptions, model_id: str) -> SD3Backbone:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    config = SD3Transformer2DModel.load_config(source, subfolder="transformer")
    if config.get("_class_name") != "SD3Transformer2DModel":
        raise ProbekitError(
            f"{source} holds a {config.get('_class_name')} transformer: sd: reads SD3 (SD3Transformer2DModel) "
            "transformer pipelines only"
        )
    _require(source, parts, ("vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"), "SD3")
    net = _network(SD3Transformer2DModel, source, "transformer", options)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    clips = [
        CLIPTextModelWithProjection.from_pretrained(source, subfolder=name)
        for name in ("text_encoder", "text_encoder_2")
    ]
    t5 = None
    if "text_encoder_3" in parts:
        _require(source, parts, ("tokenizer_3",), "SD3")
        t5 = (_tokenizer(source, "tokenizer_3"), T5EncoderModel.from_pretrained(source, subfolder="text_encoder_3"))
    text = SD3Text(
        [_tokenizer(source, "tokenizer"), _tokenizer(source, "tokenizer_2")],
        clips,
        int(net.config.joint_attention_dim),
        t5,
    )
    scheduler = FlowMatchEulerDiscreteScheduler.load_config(source, subfolder="scheduler")
    schedule = FlowMatchingSchedule(SD3_STEPS, input_scale=float(scheduler.get("num_train_timesteps", 1000)))
    return SD3Backbone(net, vae, text, schedule, model_id)


def _refuse_part_folder(source: str) -> None:
    """A local folder that is not a pipeline: name what it holds, and the folder above when it is a pipeline's part."""
    path = Path(source).expanduser()
    if (
        not path.is_dir()
        or (path / "model_index.json").is_file()
        or (path / "unet").is_dir()
        or (path / "transformer").is_dir()
    ):
        return
    holds = folder_contents(path)
    if (path.parent / "model_index.json").is_file():
        raise ProbekitError(
            f"{source} is the {path.name}/ folder of a pipeline (it holds {holds}): give the pipeline folder above it, "
            f"sd:{path.parent}"
        )
    raise ProbekitError(
        f"{source} holds {holds}, not a diffusers pipeline: sd: needs a pipeline folder with model_index.json, "
        "unet/ or transformer/, vae/, text_encoder/, tokenizer/ and scheduler/ (a lone UNet2DModel folder loads as "
        "--model FOLDER)"
    )


def load_sd(spec: str, options: LoadOptions) -> StableDiffusionBackbone | SD3Backbone:
    """Load ``sd:FOLDER_OR_HUB_ID`` (SD 1.x / 2.x / XL / 3): see :mod:`probekit.models.sd`."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ProbekitError(
            "sd: models need the transformers package for their text encoders: pip install 'probekit[vision]'"
        ) from None
    source = spec[len(PREFIX) :]
    if not source:
        raise ProbekitError(f"{spec!r} names no pipeline: write sd:FOLDER or sd:OWNER/NAME")
    require_existing_folder(
        source,
        PREFIX,
        "a saved diffusers pipeline (with model_index.json, unet/ or transformer/), or a hub id OWNER/NAME",
    )
    _refuse_part_folder(source)
    model_id = twin_id(spec, options.random_init, options.seed)
    with quiet_diffusers():
        try:
            parts = _components(source)
            if "transformer" in parts:
                return _load_sd3(source, parts, options, model_id)
            return _load_unet(source, parts, options, model_id)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ProbekitError(
                f"cannot load a Stable Diffusion pipeline from {source!r} ({first}): give a folder with unet/ (SD "
                "1.x/2.x/XL) "
                "or transformer/ (SD3), vae/, text_encoder(s)/, tokenizer(s)/ and scheduler/, or a hub id"
            ) from err
