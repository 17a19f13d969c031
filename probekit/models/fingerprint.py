"""The model fingerprint: the weights and every config that decides the features, in one hash.

Two caches of one model are the same model only when the weights *and* what the loader read
besides them agree: an edited ``vae/config.json`` (``scaling_factor``), ``scheduler_config.json``
(betas) or ``config.json`` of a network changes the features without changing a tensor. The
fingerprint hashes a description of the loaded model (:func:`describe_model`):

* ``weights``: :meth:`Backbone.weights_sha256`;
* ``configs``: each weight module's own config as loaded (diffusers' ``config``, transformers'
  ``config.to_dict()``), by role (``net``, ``unet``, ``vae``, ``text_encoder``, ...), plus what a
  family reads beside them (tokenizer vocabularies, an image processor's settings);
* ``schedule``: the noise schedule's state as built from the scheduler config (what the
  scheduler config changes in the features);
* ``prompt``: the text conditioning's template (text-conditioned families).

Keys in :data:`BOOKKEEPING` are left out, each with the reason it cannot change a feature. The
description is stored in the cache (``model_config``), so a resume onto a cache of another
fingerprint names the fields that changed. Scheduler-config fields that build no part of the
schedule (``clip_sample``, ``prediction_type``, ...: sampling settings) change no feature and so no
fingerprint: :data:`SCHEDULER_FIELDS_WITHOUT_EFFECT` lists them with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: config keys that record provenance, never a computation: left out of the fingerprint
BOOKKEEPING: dict[str, str] = {
    "_diffusers_version": "the diffusers version that saved the file",
    "_name_or_path": "the path or hub id the module was loaded from (moving a folder changes no feature)",
    "_use_default_values": "which fields the file lacked; their default values are in the config itself",
    "_commit_hash": "the hub revision the files came from; their content is hashed instead",
    "transformers_version": "the transformers version that saved the file",
    "_attn_implementation_autoset": "whether transformers chose the attention kernel itself",
}

#: scheduler_config.json fields that build no part of the training noise schedule (they steer
#: sampling); the loader reads them, but no feature depends on them
SCHEDULER_FIELDS_WITHOUT_EFFECT: dict[str, str] = {
    "_class_name": "VP schedulers (DDPM, DDIM, PNDM, ...) share one training noise; the class is checked, not used",
    "_diffusers_version": BOOKKEEPING["_diffusers_version"],
    "clip_sample": "clips x0 while sampling; features are read from the forward only",
    "clip_sample_range": "as clip_sample",
    "prediction_type": "what the network's output means; the features are activations, not the output",
    "variance_type": "the sampler's posterior variance",
    "thresholding": "dynamic thresholding while sampling",
    "dynamic_thresholding_ratio": "as thresholding",
    "sample_max_value": "as thresholding",
    "timestep_spacing": "which t a sampler visits; extraction takes its grid from --timesteps",
    "steps_offset": "as timestep_spacing",
    "set_alpha_to_one": "the final sampling step of DDIM",
    "skip_prk_steps": "PNDM's sampler steps",
}


def module_config(module: object) -> dict[str, Any]:
    """The loaded config of a diffusers, transformers or DDAE module (bookkeeping keys removed), or {}."""
    config = getattr(module, "config", None)
    if config is None:
        return {}
    if hasattr(config, "to_dict"):  # transformers
        raw = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):  # DDAE's own network configs
        raw = dataclasses.asdict(config)
    else:  # diffusers' FrozenDict
        raw = dict(config)
    return {key: value for key, value in raw.items() if key not in BOOKKEEPING}


def tokenizer_state(tokenizer: object) -> dict[str, Any]:
    """What a tokenizer turns a prompt into: its class, vocabulary (hashed), maximum length and special tokens."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    digest = hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest()
    return {
        "class": type(tokenizer).__name__,
        "vocab_sha256": digest,
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "special_tokens": _jsonable(getattr(tokenizer, "special_tokens_map", {})),
    }


def schedule_state(schedule: object) -> dict[str, Any]:
    """The schedule's class and public state (arrays hashed), as built from its config."""
    state = {key: value for key, value in vars(schedule).items() if not key.startswith("_")}
    return {"class": type(schedule).__name__, **{key: _jsonable(value) for key, value in sorted(state.items())}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {
            "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "dtype": str(array.dtype),
            "shape": list(array.shape),
        }
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return repr(value)


def describe_model(backbone: Any) -> dict[str, Any]:
    """Everything besides data and extraction settings that decides ``backbone``'s features (JSON-able)."""
    description = {
        "weights": backbone.weights_sha256(),
        "configs": _jsonable(backbone.configs()),
        "schedule": schedule_state(backbone.schedule),
    }
    prompt = backbone.cache_attrs().get("prompt")
    if prompt is not None:
        description["prompt"] = prompt
    return description


def fingerprint(description: Mapping[str, Any]) -> str:
    """SHA-256 of a :func:`describe_model` description (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()
