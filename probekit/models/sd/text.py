"""Prompts -> the text conditioning each Stable Diffusion generation feeds its denoiser.

Each class reproduces its pipeline's ``encode_prompt`` for a positive prompt, no guidance, no
clip skip: tokens padded to the tokenizer's ``model_max_length``.

* :class:`CLIPText` (SD 1.x / 2.x): the last hidden state of one CLIP text encoder.
* :class:`SDXLText`: the penultimate hidden states of CLIP ``text_encoder`` and
  ``text_encoder_2`` (with projection) concatenated along features, and the projected pooled
  embedding of ``text_encoder_2``.
* :class:`FluxText`: T5's last hidden state (``max_sequence_length`` 512 tokens); pooled = the
  CLIP text encoder's pooled output (``pooler_output``, 77 tokens).
* :class:`PixArtText`: T5's last hidden state and its attention mask (120 tokens for PixArt-alpha,
  300 for PixArt-Sigma, the pipelines' defaults); no pooled embedding.
* :class:`SD3Text`: the two CLIPs as for SDXL, zero-padded to the T5 width and followed along the
  sequence by T5's last hidden state (``max_sequence_length`` 256 tokens), or by 256 zero tokens
  when the pipeline has no ``text_encoder_3``; pooled = both CLIPs' projections concatenated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: prompts per text-encoder call when embedding one prompt per class
TEXT_BATCH = 64
#: SD3's T5 sequence length (the pipeline's default ``max_sequence_length``)
T5_TOKENS = 256


@dataclass
class PromptEmbeds:
    """One row per prompt: ``hidden`` (P, L, D) encoder hidden states, ``pooled`` (P, D') or None,
    ``mask`` (P, L) the tokens' attention mask where the denoiser reads one (PixArt), else None.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PromptEmbeds:
        return PromptEmbeds(
            self.hidden.to(device),
            None if self.pooled is None else self.pooled.to(device),
            None if self.mask is None else self.mask.to(device),
        )

    def rows(self, index: torch.Tensor) -> PromptEmbeds:
        return PromptEmbeds(
            self.hidden[index],
            None if self.pooled is None else self.pooled[index],
            None if self.mask is None else self.mask[index],
        )


def _tokens(tokenizer: object, prompts: Sequence[str], length: int, device: torch.device) -> torch.Tensor:
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids
    return ids.to(device)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _clip(tokenizer: object, encoder: nn.Module, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate hidden state (P, L, D), first output) of a CLIP text encoder, as the XL / 3 pipelines read it."""
    out = encoder(_tokens(tokenizer, prompts, tokenizer.model_max_length, _device(encoder)), output_hidden_states=True)
    return out.hidden_states[-2], out[0]


class TextConditioning(ABC):
    """A pipeline's tokenizers and text encoders, and how its pipeline turns prompts into conditioning."""

    def __call__(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Embeddings of ``prompts`` in batches of :data:`TEXT_BATCH`, without gradients."""
        with torch.no_grad():
            parts = [self.encode(prompts[i : i + TEXT_BATCH]) for i in range(0, len(prompts), TEXT_BATCH)]
        pooled = None if parts[0].pooled is None else torch.cat([part.pooled for part in parts])  # type: ignore[misc]
        mask = None if parts[0].mask is None else torch.cat([part.mask for part in parts])  # type: ignore[misc]
        return PromptEmbeds(torch.cat([part.hidden for part in parts]), pooled, mask)

    @abstractmethod
    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Embeddings of a few prompts."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The text encoders by pipeline role (``text_encoder``, ``text_encoder_2``, ...)."""

    def tokenizer_roles(self) -> dict[str, object]:
        """The tokenizers by pipeline role (``tokenizer``, ``tokenizer_2``, ``tokenizer_3``)."""
        found = [getattr(self, "tokenizer", None), *getattr(self, "tokenizers", [])]
        t5 = getattr(self, "t5", None)
        found.append(t5[0] if t5 is not None else None)
        present = [tokenizer for tokenizer in found if tokenizer is not None]
        return {("tokenizer" if i == 0 else f"tokenizer_{i + 1}"): tok for i, tok in enumerate(present)}


class CLIPText(TextConditioning):
    """SD 1.x / 2.x: the last hidden state of ``text_encoder``."""

    def __init__(self, tokenizer: object, encoder: nn.Module) -> None:
        self.tokenizer, self.encoder = tokenizer, encoder.eval().requires_grad_(False)

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        ids = _tokens(self.tokenizer, prompts, self.tokenizer.model_max_length, _device(self.encoder))
        return PromptEmbeds(self.encoder(ids)[0])

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.encoder}


class SDXLText(TextConditioning):
    """SDXL: both CLIPs' penultimate hidden states concatenated; pooled = ``text_encoder_2``'s projection."""

    def __init__(self, tokenizers: Sequence[object], encoders: Sequence[nn.Module]) -> None:
        self.tokenizers = list(tokenizers)
        self.encoders = [encoder.eval().requires_grad_(False) for encoder in encoders]

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        (hidden_1, _), (hidden_2, pooled) = (_clip(t, e, prompts) for t, e in zip(self.tokenizers, self.encoders))
        return PromptEmbeds(torch.cat([hidden_1, hidden_2], dim=-1), pooled)

    @property
    def pooled_dim(self) -> int:
        return int(self.encoders[1].config.projection_dim)

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.encoders[0], "text_encoder_2": self.encoders[1]}


class SD3Text(TextConditioning):
    """SD3: two CLIPs (padded to ``joint_dim``) then T5 (or zeros) along the sequence; pooled = both projections."""

    def __init__(
        self,
        tokenizers: Sequence[object],
        encoders: Sequence[nn.Module],
        joint_dim: int,
        t5: tuple[object, nn.Module] | None = None,
    ) -> None:
        self.tokenizers = list(tokenizers)
        self.encoders = [encoder.eval().requires_grad_(False) for encoder in encoders]
        self.joint_dim = int(joint_dim)
        self.t5 = None if t5 is None else (t5[0], t5[1].eval().requires_grad_(False))

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        (hidden_1, pooled_1), (hidden_2, pooled_2) = (
            _clip(t, e, prompts) for t, e in zip(self.tokenizers, self.encoders)
        )
        clip = torch.cat([hidden_1, hidden_2], dim=-1)
        if self.t5 is None:
            t5 = clip.new_zeros(len(prompts), T5_TOKENS, self.joint_dim)
        else:
            tokenizer, encoder = self.t5
            t5 = encoder(_tokens(tokenizer, prompts, T5_TOKENS, _device(encoder)))[0].to(clip.device)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return PromptEmbeds(torch.cat([clip, t5], dim=-2), torch.cat([pooled_1, pooled_2], dim=-1))

    def modules(self) -> dict[str, nn.Module]:
        roles = {"text_encoder": self.encoders[0], "text_encoder_2": self.encoders[1]}
        return roles if self.t5 is None else {**roles, "text_encoder_3": self.t5[1]}


#: Flux's T5 sequence length (FluxPipeline's default ``max_sequence_length``)
FLUX_T5_TOKENS = 512


class FluxText(TextConditioning):
    """Flux: T5 (``text_encoder_2``) hidden states; pooled = CLIP (``text_encoder``) ``pooler_output``."""

    def __init__(self, clip: tuple[Any, nn.Module], t5: tuple[Any, nn.Module]) -> None:
        self.tokenizers = [clip[0], t5[0]]
        self.encoders = [clip[1].eval().requires_grad_(False), t5[1].eval().requires_grad_(False)]

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        (clip_tokenizer, t5_tokenizer), (clip, t5) = self.tokenizers, self.encoders
        pooled = clip(_tokens(clip_tokenizer, prompts, clip_tokenizer.model_max_length, _device(clip))).pooler_output
        hidden = t5(_tokens(t5_tokenizer, prompts, FLUX_T5_TOKENS, _device(t5)))[0]
        return PromptEmbeds(hidden.to(pooled.device), pooled)

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.encoders[0], "text_encoder_2": self.encoders[1]}


class PixArtText(TextConditioning):
    """PixArt: T5 hidden states of ``tokens`` tokens and their attention mask (no pooled embedding).

    The pipelines' caption cleaning (``clean_caption``, which needs bs4 and ftfy) is not applied:
    class prompts are embedded as written.
    """

    def __init__(self, tokenizer: Any, encoder: nn.Module, tokens: int) -> None:
        self.tokenizer, self.encoder, self.tokens = tokenizer, encoder.eval().requires_grad_(False), int(tokens)

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        inputs = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokens,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        device = _device(self.encoder)
        mask = inputs.attention_mask.to(device)
        return PromptEmbeds(self.encoder(inputs.input_ids.to(device), attention_mask=mask)[0], None, mask)

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.encoder}
