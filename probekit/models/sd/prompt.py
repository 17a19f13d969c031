"""The prompt of a Stable Diffusion backbone: the empty prompt, or a template with the class name in it.

``--prompt "a photo of a {class}"`` (DIFT's recipe) conditions each image on the template with its
own class name substituted. The prompts are embedded once per class; each forward picks the rows of
its samples' labels. Conditioning on the true class name puts the label into the features.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import torch

from probekit.core.errors import ProbekitError
from probekit.models.sd.text import PromptEmbeds, TextConditioning

PLACEHOLDER = "class"


def class_prompts(template: str, class_names: Sequence[str]) -> list[str]:
    """``template`` with ``{class}`` replaced by each class name, in class-id order.

    Raises :class:`ProbekitError` when the template has no ``{class}``, another placeholder, or
    unbalanced braces, or when the classes have no names (empty, or just their ids "0", "1", ...).
    """
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as err:
        raise ProbekitError(
            f"--prompt {template!r} is not a template ({err}): write e.g. 'a photo of a {{class}}'"
        ) from None
    if PLACEHOLDER not in fields:
        raise ProbekitError(f"--prompt {template!r} has no {{class}} placeholder: write e.g. 'a photo of a {{class}}'")
    unknown = sorted(fields - {PLACEHOLDER})
    if unknown:
        shown = ", ".join("{" + field + "}" for field in unknown)
        raise ProbekitError(f"--prompt {template!r} has unknown placeholder(s) {shown}: only {{class}} is filled in")
    names = [str(name) for name in class_names]
    if not names or names == [str(i) for i in range(len(names))]:
        raise ProbekitError(
            "the dataset's classes have no names (only ids 0..N-1): --prompt needs class names to fill in; "
            "use a dataset with named classes or drop --prompt"
        )
    try:
        return [template.format(**{PLACEHOLDER: name}) for name in names]
    except (ValueError, IndexError, KeyError, AttributeError) as err:
        raise ProbekitError(
            f"--prompt {template!r} cannot be filled in ({err}): write e.g. 'a photo of a {{class}}'"
        ) from None


class PromptConditioned:
    """Mixin of the Stable Diffusion backbones: the text conditioning of every forward.

    The empty prompt by default (one row, shared by every sample); after :meth:`set_prompt`, one
    row per class, picked by each sample's label.
    """

    model_id: str
    text: TextConditioning
    prompt: str

    def _init_prompt(self, text: TextConditioning) -> None:
        self.text = text
        self.prompt = ""
        self._embeds = text([""])
        self._per_class = False

    def set_prompt(self, template: str, class_names: Sequence[str]) -> None:
        """Condition on ``template`` with each sample's class name (``class_names[label]``) filled in."""
        self._embeds = self.text(class_prompts(template, class_names))
        self.prompt = template
        self._per_class = True

    def cache_attrs(self) -> dict[str, object]:
        """The prompt template ("" for the empty prompt)."""
        return {"prompt": self.prompt}

    def configs(self) -> dict[str, object]:
        """The weight modules' configs (:meth:`HookedBackbone.configs`) and every tokenizer's state."""
        from probekit.models.fingerprint import tokenizer_state

        found = super().configs()  # type: ignore[misc]
        return {**found, **{role: tokenizer_state(tok) for role, tok in self.text.tokenizer_roles().items()}}

    def _conditioning(self, labels: torch.Tensor | None, like: torch.Tensor) -> PromptEmbeds:
        """The conditioning rows of a batch shaped like ``like`` (B, ...), on its device and dtype."""
        batch = like.shape[0]
        if not self._per_class:
            rows = self._embeds.rows(torch.zeros(batch, dtype=torch.long, device=self._embeds.hidden.device))
        else:
            if labels is None:
                raise ProbekitError(
                    f"{self.model_id} is conditioned on the prompt {self.prompt!r}: pass each sample's class label "
                    "(labels=...)"
                )
            count = self._embeds.hidden.shape[0]
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= count):
                raise ProbekitError(f"labels outside 0..{count - 1}: the prompt was filled in for {count} class names")
            rows = self._embeds.rows(labels.to(self._embeds.hidden.device).long())
        pooled = None if rows.pooled is None else rows.pooled.to(device=like.device, dtype=like.dtype)
        mask = None if rows.mask is None else rows.mask.to(device=like.device)
        return PromptEmbeds(rows.hidden.to(device=like.device, dtype=like.dtype), pooled, mask)

    def _move_prompt(self, device: torch.device | str) -> None:
        self._embeds = self._embeds.to(device)
