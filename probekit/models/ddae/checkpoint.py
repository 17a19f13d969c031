"""Reading DDAE checkpoints: ``{'MODEL': ..., 'EMA': ..., 'opt': ...}`` as its train.py saves them.

* ``MODEL`` -- the DistributedDataParallel-wrapped diffusion module: network weights under
  ``module.nn_model.`` (``nn_model.`` when saved without the DDP wrapper).
* ``EMA`` -- an ``ema_pytorch.EMA`` state dict: averaged weights under ``ema_model.nn_model.``,
  the live weights again under ``online_model.``, and the counters ``initted`` and ``step``.

The file is opened with ``torch.load(weights_only=True)``: no arbitrary unpickling.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from probekit.core.errors import ProbekitError, first_line

ENTRIES = ("EMA", "MODEL")
#: EMA bookkeeping that is not part of the averaged network (same in ema-pytorch 0.2 to 0.8)
_EMA_COUNTERS = ("initted", "step")
_EMA_ONLINE = "online_model."


def _first_line(err: BaseException) -> str:
    """The error's type and the first 160 characters of its first line (torch's unpickling errors are long)."""
    line = first_line(err)
    return type(err).__name__ if line == type(err).__name__ else f"{type(err).__name__}: {line[:160]}"


def read_entry(path: str | Path, entry: str) -> dict[str, torch.Tensor]:
    """The network's state dict (prefixes stripped) from the ``entry`` of a DDAE checkpoint.

    Keys outside the network that the entry does not normally hold are kept (with their full
    name), so that strict loading reports them as unexpected.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbekitError(
            f"DDAE checkpoint {path} not found: give the .pth file DDAE's train.py saved (ckpts/model_EPOCH.pth)"
        )
    is_zip = zipfile.is_zipfile(path)  # torch.save writes zip archives (legacy files are bare pickles)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not is_zip:
            raise ProbekitError(f"{path} is not a PyTorch checkpoint: give the .pth DDAE's train.py saved") from err
        # weights_only refuses anything beyond tensors and plain containers; never retry unsafely.
        raise ProbekitError(
            f"{path} holds pickled Python objects besides tensors, which probekit will not unpickle (weights-only "
            "loading); give the .pth DDAE's train.py saved, or re-save its tensors with torch.save"
        ) from err
    except Exception as err:  # noqa: BLE001 -- torch raises many kinds for files that are not checkpoints
        if not is_zip:
            raise ProbekitError(f"{path} is not a PyTorch checkpoint: give the .pth DDAE's train.py saved") from err
        raise ProbekitError(
            f"cannot read checkpoint {path} ({_first_line(err)}); give an intact .pth saved by DDAE's train.py"
        ) from err
    if not isinstance(checkpoint, dict) or entry not in checkpoint:
        found = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ProbekitError(
            f"{path} has no '{entry}' entry (found {found}): give a checkpoint saved by DDAE's train.py"
        )
    state = checkpoint[entry]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ProbekitError(
            f"the '{entry}' entry of {path} is not a state dict of tensors: give a checkpoint saved by DDAE's train.py"
        )
    if entry == "EMA":
        return _strip(state, ("ema_model.nn_model.",), lambda key: key in _EMA_COUNTERS or key.startswith(_EMA_ONLINE))
    return _strip(state, ("module.nn_model.", "nn_model."), lambda key: False)


def _strip(
    state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...], ignored: Callable[[str], bool]
) -> dict[str, torch.Tensor]:
    prefix = next((p for p in prefixes if any(key.startswith(p) for key in state)), prefixes[0])
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(prefix):
            out[key[len(prefix) :]] = tensor
        elif not ignored(key):
            out[key] = tensor  # foreign key: reported as unexpected by load_strict
    return out


def load_strict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str, config_path: str) -> None:
    """Copy ``state`` into ``net``; any missing, unexpected or mis-shaped key is a one-line error."""
    expected = net.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} {tuple(state[key].shape)} vs {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and tuple(state[key].shape) != tuple(tensor.shape)
    ]
    problems = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape (checkpoint vs config)", shapes),
    ):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ProbekitError(
            f"{source} does not match the network built from {config_path}: {'; '.join(problems)}; "
            "give the YAML config this checkpoint was trained with"
        )
    net.load_state_dict(dict(state), strict=True)
