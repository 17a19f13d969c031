"""The one hook mechanism: a context-managed trace over named captures with early stop.

``trace(captures, pooling, stop_after=name)`` hooks what every capture reads for the duration of a
``with`` block and stores its pooled tensor under its name; once ``stop_after`` is stored, the hook
raises :class:`StopForward`, so the forward ends there. Hooks are removed in ``finally``, on
success, on early stop and on error alike.

A capture is a module (its output, as :func:`primary_output` or the family's ``select`` picks it)
or a :class:`Capture`: one or more :class:`Tap` s, each the input or the output of a sub-module,
combined into one tensor once all have fired (a residual increment is an output minus an input).
Activation kinds (:mod:`probekit.models.kinds`) are captures of this second sort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

#: reads a tensor from a hook's view of a module call: (module, positional args, keyword args, output);
#: ``output`` is None for a tap on the input
Reader = Callable[[nn.Module, tuple, dict, object], torch.Tensor]


class StopForward(Exception):
    """Raised by the hook of the deepest requested capture to skip the rest of the network."""


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


def first_input(_module: nn.Module, args: tuple, kwargs: dict, _output: object) -> torch.Tensor:
    """A module's main input: ``hidden_states`` by keyword, else the first positional argument."""
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    return args[0]


@dataclass(frozen=True)
class Tap:
    """One hook: the input (``pre``) or the output of ``module``, read by ``read``."""

    module: nn.Module
    read: Reader
    pre: bool = False


def _single(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return parts[0]


@dataclass(frozen=True)
class Capture:
    """Taps whose tensors ``combine`` (in tap order) into one activation once every tap has fired."""

    taps: tuple[Tap, ...]
    combine: Callable[[Sequence[torch.Tensor]], torch.Tensor] = _single
    #: ``combine`` is linear (a difference): each tap's tensor is pooled as it arrives and the pooled
    #: parts combined (pooling is linear), so no full-size part waits and no full-size result is made
    linear: bool = False


def module_capture(module: nn.Module, select: Callable[[object], torch.Tensor] = primary_output) -> Capture:
    """The output of ``module``, as ``select`` picks it (a block output)."""
    return Capture((Tap(module, lambda _m, _a, _k, output: select(output)),))


@contextmanager
def trace(
    modules: Mapping[str, nn.Module | Capture],
    pooling: Callable[[torch.Tensor], torch.Tensor] | None,
    stop_after: str | None = None,
    select: Callable[[object], torch.Tensor] = primary_output,
) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``modules`` (modules or :class:`Capture` s) for the duration of the block; pooled
    activations land in the yielded dict.

    The dict fills in completion order. ``select`` picks the tensor out of a bare module's output
    (:func:`primary_output` unless a family says otherwise). ``pooling=None`` stores the activations
    unpooled (used at load time to record each layer's shape). The caller runs the forward inside
    the block and catches :class:`StopForward`.
    """
    captures = {
        name: entry if isinstance(entry, Capture) else module_capture(entry, select) for name, entry in modules.items()
    }
    captured: dict[str, torch.Tensor] = {}
    partial: dict[str, dict[int, torch.Tensor]] = {}
    # One hook per (module, input or output): every capture tapping that call is served before any
    # early stop, so two captures of the same module never race.
    groups: dict[tuple[int, bool], list[tuple[str, int, Tap]]] = {}
    for name, capture in captures.items():
        for index, tap in enumerate(capture.taps):
            groups.setdefault((id(tap.module), tap.pre), []).append((name, index, tap))

    def serve(taps: list[tuple[str, int, Tap]], module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        stop = False
        for name, index, tap in taps:
            parts = partial.setdefault(name, {})
            capture = captures[name]
            tensor = tap.read(module, args, kwargs, output)
            early = capture.linear and pooling is not None
            parts[index] = pooling(tensor) if early else tensor  # type: ignore[misc]
            if len(parts) == len(capture.taps):
                tensor = capture.combine([parts[i] for i in range(len(capture.taps))])
                del partial[name]
                captured[name] = tensor if pooling is None or early else pooling(tensor)
                stop = stop or name == stop_after
        if stop:
            raise StopForward

    def post_hook(taps: list[tuple[str, int, Tap]]):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            serve(taps, module, args, kwargs, output)

        return hook

    def pre_hook(taps: list[tuple[str, int, Tap]]):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            serve(taps, module, args, kwargs, None)

        return hook

    handles = []
    try:
        for (_, pre), taps in groups.items():
            module = taps[0][2].module
            if pre:
                handles.append(module.register_forward_pre_hook(pre_hook(taps), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(post_hook(taps), with_kwargs=True))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def run_traced(
    run: Callable[[], object],
    modules: Mapping[str, nn.Module | Capture],
    pooling: Callable[[torch.Tensor], torch.Tensor] | None,
    stop_after: str | None = None,
    select: Callable[[object], torch.Tensor] = primary_output,
) -> dict[str, torch.Tensor]:
    """Call ``run`` (a forward) without gradients under :func:`trace`; it stops right after ``stop_after``.

    Returns the pooled activation of every capture by name.
    """
    with torch.no_grad(), trace(modules, pooling, stop_after=stop_after, select=select) as captured:
        try:
            run()
        except StopForward:
            pass
    return captured
