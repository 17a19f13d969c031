"""``sd:FOLDER_OR_HUB_ID[?size=PIXELS]`` -> the Backbone of that diffusers pipeline's generation.

The pipeline's parts decide which: a ``transformer/`` folder is SD3 (``SD3Transformer2DModel``),
Flux (``FluxTransformer2DModel``) or PixArt (``PixArtTransformer2DModel``), by its config's class;
otherwise the ``unet/`` is SD 1.x / 2.x, or SDXL when ``text_encoder_2/`` is there too.
``size`` (Flux only, whose transformer config has no sample size) sets the image side.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.schedule import DDPMSchedule, FlowMatchingSchedule
from probekit.models.options import LoadOptions, quiet_diffusers
from probekit.models.random_init import model_id as twin_id
from probekit.models.random_init import seeded
from probekit.models.sd.flux import DEFAULT_SIZE, FluxBackbone
from probekit.models.sd.mmdit import SD3Backbone
from probekit.models.sd.pixart import T5_TOKENS, PixArtBackbone
from probekit.models.sd.text import CLIPText, FluxText, PixArtText, SD3Text, SDXLText, TextConditioning
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


#: the transformer classes sd: reads, and what their pipelines are called
TRANSFORMERS = {
    "SD3Transformer2DModel": "SD3",
    "FluxTransformer2DModel": "Flux",
    "PixArtTransformer2DModel": "PixArt",
}


def _load_transformer(
    source: str, parts: set[str], options: LoadOptions, model_id: str, size: int | None
) -> SD3Backbone | FluxBackbone | PixArtBackbone:
    from diffusers import SD3Transformer2DModel

    # load_config reads config.json whatever the class: the class name in it picks the family
    name = SD3Transformer2DModel.load_config(source, subfolder="transformer").get("_class_name")
    if name not in TRANSFORMERS:
        supported = ", ".join(f"{family} ({cls})" for cls, family in TRANSFORMERS.items())
        raise ProbekitError(f"{source} holds a {name} transformer: sd: reads {supported} transformer pipelines only")
    if size is not None and name != "FluxTransformer2DModel":
        raise ProbekitError(
            f"size= applies to Flux pipelines only: the {TRANSFORMERS[name]} transformer of {source} has its own "
            "sample size; drop it"
        )
    if name == "FluxTransformer2DModel":
        return _load_flux(source, parts, options, model_id, size or DEFAULT_SIZE)
    if name == "PixArtTransformer2DModel":
        return _load_pixart(source, parts, options, model_id)
    return _load_sd3(source, parts, options, model_id)


def _load_flux(source: str, parts: set[str], options: LoadOptions, model_id: str, size: int) -> FluxBackbone:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    _require(source, parts, ("vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"), "Flux")
    net = _network(FluxTransformer2DModel, source, "transformer", options)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    text = FluxText(
        (_tokenizer(source, "tokenizer"), CLIPTextModel.from_pretrained(source, subfolder="text_encoder")),
        (_tokenizer(source, "tokenizer_2"), T5EncoderModel.from_pretrained(source, subfolder="text_encoder_2")),
    )
    FlowMatchEulerDiscreteScheduler.load_config(source, subfolder="scheduler")  # a flow-matching pipeline
    # The transformer reads the noise fraction s itself (it scales by 1000 inside).
    return FluxBackbone(net, vae, text, FlowMatchingSchedule(SD3_STEPS), model_id, size=size)


def _load_pixart(source: str, parts: set[str], options: LoadOptions, model_id: str) -> PixArtBackbone:
    from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, PixArtTransformer2DModel
    from transformers import T5EncoderModel

    _require(source, parts, ("vae", "scheduler", "text_encoder", "tokenizer"), "PixArt")
    pipeline = str(DiffusionPipeline.load_config(source).get("_class_name", "PixArtSigmaPipeline"))
    net = _network(PixArtTransformer2DModel, source, "transformer", options)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    text = PixArtText(
        _tokenizer(source, "tokenizer"),
        T5EncoderModel.from_pretrained(source, subfolder="text_encoder"),
        T5_TOKENS.get(pipeline, T5_TOKENS["PixArtSigmaPipeline"]),
    )
    schedule = DDPMSchedule.from_config(dict(DDPMScheduler.load_config(source, subfolder="scheduler")))
    return PixArtBackbone(net, vae, text, schedule, model_id)


def _load_sd3(source: str, parts: set[str], options: LoadOptions, model_id: str) -> SD3Backbone:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

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


def _size_option(spec: str, query: str) -> int | None:
    """The ``size=PIXELS`` option of an ``sd:`` spec (the only one), or None."""
    size = None
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key != "size":
            raise ProbekitError(f"unknown sd: option {key!r} in {spec!r}: the only option is size=PIXELS (Flux)")
        if not value.isdigit() or int(value) < 1:
            raise ProbekitError(f"sd: option size={value!r} is not a positive integer: give e.g. size=512")
        size = int(value)
    return size


def load_sd(spec: str, options: LoadOptions) -> StableDiffusionBackbone | SD3Backbone | FluxBackbone | PixArtBackbone:
    """Load ``sd:FOLDER_OR_HUB_ID`` (SD 1.x / 2.x / XL / 3, Flux, PixArt): see :mod:`probekit.models.sd`."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ProbekitError(
            "sd: models need the transformers package for their text encoders: pip install 'probekit[vision]'"
        ) from None
    source, _, query = spec[len(PREFIX) :].partition("?")
    size = _size_option(spec, query)
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
                return _load_transformer(source, parts, options, model_id, size)
            if size is not None:
                raise ProbekitError(f"size= applies to Flux pipelines only; {source} is a UNet pipeline: drop it")
            return _load_unet(source, parts, options, model_id)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ProbekitError(
                f"cannot load a Stable Diffusion pipeline from {source!r} ({first}): give a folder with unet/ (SD "
                "1.x/2.x/XL) "
                "or transformer/ (SD3, Flux, PixArt), vae/, text_encoder(s)/, tokenizer(s)/ and scheduler/, or a hub id"
            ) from err
