"""Activation kinds: the tensors inside a block, besides the block outputs every family lists.

A kind is a registry entry (:class:`KindSpec`): its name, the diffusers module types it applies
to, and how to capture it from such a module (a :class:`~probekit.models.trace.Capture`: hooks on
the module or its sub-modules, never a replaced processor). A *kind layer* is named
``HOST:KIND``, the host being the module's path in the network (``up_blocks.1.attentions.0.
transformer_blocks.0.attn1:q``); it goes through the same one-forward trace, pooling, cache and
probes as a block output. The kinds:

==============  =====================================  ==============================================
kind            host module types                      activation
==============  =====================================  ==============================================
``q k v``       ``Attention``, ``FluxAttention``       ``to_q / to_k / to_v`` outputs (queries, keys,
                                                       values of the image tokens, before heads are
                                                       split, before any q/k norm or rotary
                                                       embedding); cross-attention lists ``q`` only
                                                       (its keys and values read the prompt alone)
``attn_pre``    ``Attention``, ``FluxAttention``       the attention-weighted values: the input of
                                                       ``to_out[0]`` (a pre-only attention, Flux's
                                                       single blocks: the module's output)
``attn_out``    ``Attention``, ``FluxAttention``       the output projection ``to_out[0]``'s output
``increment``   ``ResnetBlock2D``, residual            the residual increment: output minus the
                ``Attention``, ``Transformer2DModel``, skip input it was added to (a resnet's
                transformer blocks                     ``conv_shortcut(input)`` where the channels
                                                       change); for transformer blocks the image
                                                       stream's output minus its input (attention
                                                       and feed-forward together, gates included)
``ffn``         ``FeedForward``,                       the feed-forward's inner activation: the
                ``FluxSingleTransformerBlock``         output of ``net[0]`` (projection + GELU /
                                                       GEGLU), or Flux's ``act_mlp``
``out``         ``Downsample2D``, ``Upsample2D``       the sampler's output
``shift_msa``   ``AdaLayerNormZero`` (+ ``Single``,    the AdaLN modulation vectors (one per image
... ``gate_mlp``  ``SD35AdaLayerNormZeroX``), PixArt's  and block): the chunks of ``linear(silu(emb))``,
                ``ada_norm_single`` blocks             or ``scale_shift_table + timestep``
``text``        ``JointTransformerBlock``, Flux        the text-token stream after the block
                blocks
==============  =====================================  ==============================================

Token kinds are ``(B, N, C)`` and pool over tokens like a DiT block; AdaLN vectors are ``(B, C)``
and pass pooling unchanged. In Flux's single-stream blocks the sequence is text then image tokens:
the image tokens alone (the last ``image_tokens``) are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from probekit.models.layers import KIND_SEPARATOR as SEPARATOR
from probekit.models.trace import Capture, Tap, first_input, primary_output

_ATTENTION = ("Attention", "FluxAttention")
_TRANSFORMER_BLOCKS = (
    "BasicTransformerBlock",
    "JointTransformerBlock",
    "FluxTransformerBlock",
    "FluxSingleTransformerBlock",
)
_ADALN = ("AdaLayerNormZero", "AdaLayerNormZeroSingle", "SD35AdaLayerNormZeroX")
#: the chunk names of AdaLN modulation, in the order diffusers splits ``linear(silu(emb))``
MODULATION = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
_MODULATION_X = (*MODULATION, "shift_msa2", "scale_msa2", "gate_msa2")
_INCREMENT = "residual increment: output minus the skip input it is added to"


@dataclass(frozen=True)
class KindContext:
    """What a capture needs besides the module: the image-token count of the network's input
    (Flux's single-stream blocks carry text tokens before the image ones).
    """

    image_tokens: int | None = None


@dataclass(frozen=True)
class KindSpec:
    """One activation kind: ``applies(module)`` says whether a module hosts it, ``capture`` reads it."""

    name: str
    module_types: tuple[str, ...]
    description: str
    #: ``tokens`` (B, N, C), ``map`` (B, C, H, W) or ``vector`` (B, C): how pooling treats it
    shape: str
    capture: Callable[[nn.Module, str, KindContext], Capture]
    applies: Callable[[nn.Module, str], bool] = lambda _module, _path: True


def _output(_module: nn.Module, _args: tuple, _kwargs: dict, output: object) -> torch.Tensor:
    return primary_output(output)


def _input(module: nn.Module, args: tuple, kwargs: dict, output: object) -> torch.Tensor:
    return first_input(module, args, kwargs, output)


def _difference(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return parts[0] - parts[1]


def _image_tokens(path: str, context: KindContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """Keeps the image tokens of a Flux single-stream block's joint sequence; identity elsewhere."""
    if ".single_transformer_blocks." not in f".{path}" or context.image_tokens is None:
        return lambda tensor: tensor
    count = context.image_tokens
    return lambda tensor: tensor[:, -count:]


def _is(module: nn.Module, names: tuple[str, ...]) -> bool:
    return type(module).__name__ in names


def _sub(module: nn.Module, name: str) -> nn.Module:
    """A sub-module by attribute name (diffusers' modules are untyped to the checker)."""
    child = getattr(module, name)
    assert isinstance(child, nn.Module), f"{type(module).__name__}.{name} is not a module"
    return child


def _linear(module: nn.Module) -> nn.Linear:
    linear = _sub(module, "linear")
    assert isinstance(linear, nn.Linear)
    return linear


def _chunks(module: nn.Module) -> int:
    """How many modulation vectors an AdaLN module's ``linear`` makes (6, 3 or 9)."""
    linear = _linear(module)
    return linear.out_features // linear.in_features


# --- attention -------------------------------------------------------------------------------------


def _projection(attribute: str) -> Callable[[nn.Module, str, KindContext], Capture]:
    def capture(module: nn.Module, path: str, context: KindContext) -> Capture:
        keep = _image_tokens(path, context)
        return Capture((Tap(_sub(module, attribute), lambda m, a, k, o: keep(primary_output(o))),))

    return capture


def _self_attention(module: nn.Module, _path: str) -> bool:
    return not getattr(module, "is_cross_attention", False)


def _has_projections(module: nn.Module, _path: str) -> bool:
    return isinstance(getattr(module, "to_q", None), nn.Module)


def _out_projection(module: nn.Module) -> nn.Module | None:
    to_out = getattr(module, "to_out", None)
    return to_out[0] if isinstance(to_out, nn.ModuleList) else None  # [1] is dropout


def _attn_pre(module: nn.Module, path: str, context: KindContext) -> Capture:
    keep = _image_tokens(path, context)
    projection = _out_projection(module)
    if projection is None:  # pre-only attention: its output is the attention-weighted values
        return Capture((Tap(module, lambda m, a, k, o: keep(primary_output(o))),))
    return Capture((Tap(projection, lambda m, a, k, o: keep(_input(m, a, k, o)), pre=True),))


def _attn_out(module: nn.Module, _path: str, _context: KindContext) -> Capture:
    projection = _out_projection(module)
    assert projection is not None, "attn_out applies to attentions with an output projection only"
    return Capture((Tap(projection, _output),))


# --- residual increments ------------------------------------------------------------------------


def _resnet_increment(module: nn.Module, _path: str, _context: KindContext) -> Capture:
    shortcut = getattr(module, "conv_shortcut", None)
    skip = Tap(shortcut, _output) if isinstance(shortcut, nn.Module) else Tap(module, _input, pre=True)
    return Capture((Tap(module, _output), skip), _difference, linear=True)


def _plain_resnet(module: nn.Module, _path: str) -> bool:
    return not (getattr(module, "up", False) or getattr(module, "down", False))


def _image_stream(output: object) -> torch.Tensor:
    """The image tokens of a block's output: the second of a dual-stream block's (text, image)
    (the text entry is None after SD3's last block).
    """
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], torch.Tensor):
        return output[1]
    return primary_output(output)


def _block_increment(module: nn.Module, _path: str, _context: KindContext) -> Capture:
    return Capture(
        (Tap(module, lambda m, a, k, o: _image_stream(o)), Tap(module, _input, pre=True)),
        _difference,
        linear=True,
    )


def _residual_attention(module: nn.Module, _path: str) -> bool:
    return bool(getattr(module, "residual_connection", False))


# --- feed-forward, samplers, text stream ------------------------------------------------------------


def _ffn(module: nn.Module, path: str, context: KindContext) -> Capture:
    if _is(module, ("FluxSingleTransformerBlock",)):
        inner = _sub(module, "act_mlp")
    else:
        net = _sub(module, "net")
        assert isinstance(net, nn.ModuleList)
        inner = net[0]
    keep = _image_tokens(path, context)
    return Capture((Tap(inner, lambda m, a, k, o: keep(primary_output(o))),))


def _sampler_out(module: nn.Module, _path: str, _context: KindContext) -> Capture:
    return Capture((Tap(module, _output),))


def _text(module: nn.Module, _path: str, _context: KindContext) -> Capture:
    def read(_m: nn.Module, _args: tuple, _kwargs: dict, output: object) -> torch.Tensor:
        assert isinstance(output, tuple)
        return output[0]

    return Capture((Tap(module, read),))


def _has_text_stream(module: nn.Module, _path: str) -> bool:
    return not getattr(module, "context_pre_only", False)


# --- AdaLN modulation -------------------------------------------------------------------------------


def _modulation(index: int) -> Callable[[nn.Module, str, KindContext], Capture]:
    def capture(module: nn.Module, _path: str, _context: KindContext) -> Capture:
        if _is(module, ("BasicTransformerBlock",)):  # PixArt: scale_shift_table + the block's timestep input

            def read(m: nn.Module, _args: tuple, kwargs: dict, _output: object) -> torch.Tensor:
                timestep = kwargs["timestep"]
                table = getattr(m, "scale_shift_table")[None] + timestep.reshape(timestep.shape[0], 6, -1)  # noqa: B009
                return table[:, index]

            return Capture((Tap(module, read, pre=True),))
        count = _chunks(module)

        def chunk(_m: nn.Module, _args: tuple, _kwargs: dict, output: object) -> torch.Tensor:
            assert isinstance(output, torch.Tensor)
            return output.chunk(count, dim=1)[index]

        return Capture((Tap(_linear(module), chunk),))

    return capture


def _modulated_by(name: str) -> Callable[[nn.Module, str], bool]:
    def applies(module: nn.Module, _path: str) -> bool:
        if _is(module, ("BasicTransformerBlock",)):
            return getattr(module, "norm_type", None) == "ada_norm_single" and name in MODULATION
        return name in _MODULATION_X[: _chunks(module)]

    return applies


def _modulation_kinds() -> list[KindSpec]:
    return [
        KindSpec(
            name,
            (*_ADALN, "BasicTransformerBlock"),
            f"AdaLN modulation vector {name} (one per image and block)",
            "vector",
            _modulation(index),
            _modulated_by(name),
        )
        for index, name in enumerate(_MODULATION_X)
    ]


KINDS: tuple[KindSpec, ...] = (
    KindSpec("q", _ATTENTION, "queries: to_q's output", "tokens", _projection("to_q"), _has_projections),
    KindSpec(
        "k",
        _ATTENTION,
        "keys: to_k's output (self and joint attention)",
        "tokens",
        _projection("to_k"),
        lambda m, p: _has_projections(m, p) and _self_attention(m, p),
    ),
    KindSpec(
        "v",
        _ATTENTION,
        "values: to_v's output (self and joint attention)",
        "tokens",
        _projection("to_v"),
        lambda m, p: _has_projections(m, p) and _self_attention(m, p),
    ),
    KindSpec("attn_pre", _ATTENTION, "attention output before the output projection", "tokens", _attn_pre),
    KindSpec(
        "attn_out",
        _ATTENTION,
        "attention output after the output projection (to_out[0])",
        "tokens",
        _attn_out,
        lambda m, p: _out_projection(m) is not None,
    ),
    KindSpec(
        "increment",
        ("ResnetBlock2D",),
        _INCREMENT,
        "map",
        _resnet_increment,
        _plain_resnet,
    ),
    KindSpec(
        "increment",
        ("Attention",),
        _INCREMENT,
        "map",
        _block_increment,
        _residual_attention,
    ),
    KindSpec(
        "increment",
        ("Transformer2DModel", *_TRANSFORMER_BLOCKS),
        _INCREMENT,
        "tokens",
        _block_increment,
    ),
    KindSpec("ffn", ("FeedForward", "FluxSingleTransformerBlock"), "feed-forward inner activation", "tokens", _ffn),
    KindSpec("out", ("Downsample2D", "Upsample2D"), "sampler output", "map", _sampler_out),
    KindSpec(
        "text",
        ("JointTransformerBlock", "FluxTransformerBlock", "FluxSingleTransformerBlock"),
        "text-token stream after the block",
        "tokens",
        _text,
        _has_text_stream,
    ),
    *_modulation_kinds(),
)


def kind_names() -> list[str]:
    """Every kind name, once, in registry order."""
    return list(dict.fromkeys(spec.name for spec in KINDS))


def find_kinds(net: nn.Module, context: KindContext = KindContext()) -> Iterator[tuple[str, KindSpec, Capture]]:
    """``(HOST:KIND, spec, capture)`` for every kind every module of ``net`` hosts, in module order."""
    for path, module in net.named_modules():
        if not path:
            continue
        for spec in KINDS:
            if type(module).__name__ in spec.module_types and spec.applies(module, path):
                yield f"{path}{SEPARATOR}{spec.name}", spec, spec.capture(module, path, context)
