"""The one hook mechanism: a context-managed trace over named modules with early stop.

``trace(modules, pooling, stop_after=name)`` hooks every module for the duration of a ``with``
block and stores its pooled output under its name; the hook of ``stop_after`` raises
:class:`StopForward` once its output is stored, so the forward ends there. Hooks are removed in
``finally``, on success, on early stop and on error alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


class StopForward(Exception):
    """Raised by the hook of the deepest requested module to skip the rest of the network."""


def primary_output(output: object) -> torch.Tensor:
    """The tensor a module's output stands for.

    diffusers down blocks return ``(hidden_states, skip_states)`` and some models a ``...Output``
    record with ``.sample``; transformers layers return a tuple whose first entry is the hidden state.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, "sample"):
        output = output.sample
    return output  # type: ignore[return-value]


@contextmanager
def trace(
    modules: Mapping[str, nn.Module],
    pooling: Callable[[torch.Tensor], torch.Tensor] | None,
    stop_after: str | None = None,
    select: Callable[[object], torch.Tensor] = primary_output,
) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``modules`` for the duration of the block; pooled outputs land in the yielded dict.

    The dict fills in completion order. ``select`` picks the tensor out of a module's output
    (:func:`primary_output` unless a family says otherwise). ``pooling=None`` stores the outputs
    unpooled (used at load time to record each layer's shape). The caller runs the forward inside
    the block and catches :class:`StopForward`.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            tensor = select(output)
            captured[name] = tensor if pooling is None else pooling(tensor)
            if name == stop_after:
                raise StopForward

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def run_traced(
    run: Callable[[], object],
    modules: Mapping[str, nn.Module],
    pooling: Callable[[torch.Tensor], torch.Tensor] | None,
    stop_after: str | None = None,
    select: Callable[[object], torch.Tensor] = primary_output,
) -> dict[str, torch.Tensor]:
    """Call ``run`` (a forward) without gradients under :func:`trace`; it stops right after ``stop_after``.

    Returns the pooled output of every module by name.
    """
    with torch.no_grad(), trace(modules, pooling, stop_after=stop_after, select=select) as captured:
        try:
            run()
        except StopForward:
            pass
    return captured
