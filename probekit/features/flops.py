"""FLOPs and pooled widths of the forward extraction runs, counted before the first batch.

``torch.utils.flop_counter`` on fake tensors (no arithmetic, no activation memory), with the CPU
attention kernel it does not list added; the autocast context every extraction forward runs in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from probekit.core.errors import ProbekitError, first_line
from probekit.core.pooling import Pooling
from probekit.core.types import GridPoint
from probekit.models.backbone import Backbone


class ExtractPlan(Protocol):
    """What counting reads of :class:`probekit.features.extraction.ExtractPlan`."""

    @property
    def grid(self) -> Sequence[GridPoint]: ...

    @property
    def layers(self) -> Sequence[str]: ...

    @property
    def pooling(self) -> Pooling: ...


log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=dtype)
    except RuntimeError as err:
        raise ProbekitError(f"--precision {precision} is not supported on {device.type} ({err}); use fp32") from err


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:  # noqa: ANN001
    """FLOPs of softmax(Q K^T) V in the CPU fused-attention kernel: 2 B H L S E for Q K^T plus
    2 B H L S Ev for the product with V, the count torch gives its GPU attention kernels.
    """
    batch, heads, queries, dim = query_shape
    return 2 * batch * heads * queries * key_shape[-2] * (dim + value_shape[-1])


# Kernels that torch.utils.flop_counter does not list: without this, every attention layer of a
# model run on the CPU counts as zero FLOPs (8 % of the shipped UNet's work, 30 % of its time).
_UNLISTED_FLOPS = {
    op: _cpu_attention_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None
}


def flop_counter() -> torch.utils.flop_counter.FlopCounterMode:
    """``torch.utils.flop_counter.FlopCounterMode`` (no display) that also counts the kernels
    torch does not list (CPU attention): the counter ``probekit extract`` records FLOPs with.
    """
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_UNLISTED_FLOPS)


@dataclass
class Probe:
    """What extraction learns before its first batch: pooled widths per layer, and the FLOPs per
    image of one hooked forward (at one grid point) and of the latent encoder (0 for pixel-space
    models); FLOPs are None when they could not be counted.
    """

    widths: dict[str, int]
    forward_flops: int | None
    encode_flops: int | None


def _probe_forward(
    backbone: Backbone, x0: torch.Tensor, plan: ExtractPlan, precision: str, labels: torch.Tensor | None = None
) -> Probe:
    """Widths and FLOPs per image from the forward extraction runs, on one image ``x0``.

    Counted by ``torch.utils.flop_counter`` (matmuls, convolutions, attention, including the CPU
    attention kernel it does not list) on fake tensors: shapes flow through the network but no
    arithmetic is done and no activation memory is taken, so opening a large model costs no extra
    forward. The encoder (run once per image and view) and the hooked forward (once per grid
    point and draw, stopping after the deepest requested layer) are counted apart. Where fake
    tensors cannot trace the model, one real forward of ``x0`` is counted instead (with a log line);
    where that cannot be counted either, FLOPs are None and the widths come from a plain forward.
    """
    try:
        return _count(backbone, x0, plan, precision, labels, fake=True)
    except (ProbekitError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 -- counting is a report, never a reason to fail extraction
        log.info("fake tensors could not trace the model (%s): counting on one real forward", first_line(err))
    try:
        return _count(backbone, x0, plan, precision, labels, fake=False)
    except (ProbekitError, torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001
        log.info("could not count the forward's FLOPs (%s)", first_line(err))
    with torch.no_grad(), autocast_for(x0.device, precision):
        feats = backbone.features(backbone.encode(x0), plan.grid[0], plan.layers, plan.pooling, labels)
    return Probe({name: int(values.shape[-1]) for name, values in feats.items()}, None, None)


def _count(
    backbone: Backbone, x0: torch.Tensor, plan: ExtractPlan, precision: str, labels: torch.Tensor | None, *, fake: bool
) -> Probe:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with torch.no_grad(), mode:
        x = torch.empty_like(x0) if fake else x0
        with flop_counter() as counter:
            latent = backbone.encode(x)
        encode = int(counter.get_total_flops()) // len(x0)
        with autocast_for(x.device, precision), flop_counter() as counter:
            feats = backbone.features(latent, plan.grid[0], plan.layers, plan.pooling, labels)
        forward = int(counter.get_total_flops()) // len(x0)
        widths = {name: int(values.shape[-1]) for name, values in feats.items()}
    return Probe(widths, forward, encode)
