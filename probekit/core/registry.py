"""Registries of spec objects: probekit's own entries, and those other packages add by entry points.

A spec names its code as ``"module:attr"`` strings, resolved only when used (:func:`resolve`), so
a registry is cheap to read: listing the probes or ordering a report's tables imports no probe.
Another package adds an entry under the registry's entry-point group, e.g. in its
``pyproject.toml``::

    [project.entry-points."probekit.probes"]
    ridge = "my_package.probes:RIDGE"      # a ProbeSpec

and ``probekit probe --probes ridge`` then runs it, as lm-evaluation-harness adds a model with one
mapping line.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

from probekit.core.errors import ProbekitError

Spec = TypeVar("Spec")


def resolve(target: str) -> Any:
    """The object that ``"package.module:attr"`` names (``attr`` may be dotted)."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ProbekitError(f"{target!r} is not a 'module:attr' reference")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ProbekitError(f"cannot import {module_name} for {target!r} ({err})") from None
    for part in attr.split("."):
        if not hasattr(value, part):
            raise ProbekitError(f"{module_name} has no {attr!r} (referenced as {target!r})")
        value = getattr(value, part)
    return value


class Registry(Mapping[str, Spec], Generic[Spec]):
    """Specs by name: the built-in ones, then the entry points of ``group`` (read once, on first use).

    An entry point names the spec object itself, whose name must be the entry point's. A built-in
    name cannot be replaced.
    """

    def __init__(self, group: str, spec_type: type, builtin: Mapping[str, Spec]) -> None:
        self.group = group
        self.spec_type = spec_type
        self._builtin = dict(builtin)
        self._specs: dict[str, Spec] = {}
        self._loaded = False

    def _load(self) -> dict[str, Spec]:
        if self._loaded:
            return self._specs
        specs = dict(self._builtin)
        for entry in metadata.entry_points(group=self.group):  # a broken one fails every use, not only the first
            if entry.name in self._builtin:
                raise ProbekitError(
                    f"entry point {entry.name!r} of {self.group} ({entry.value}) takes a built-in name: rename it"
                )
            spec = entry.load()
            if not isinstance(spec, self.spec_type) or getattr(spec, "name", entry.name) != entry.name:
                raise ProbekitError(
                    f"entry point {entry.name!r} of {self.group} ({entry.value}) is not a "
                    f"{self.spec_type.__name__} named {entry.name!r}"
                )
            specs[entry.name] = typing.cast(Spec, spec)
        self._specs, self._loaded = specs, True
        return specs

    def reload(self) -> None:
        """Read the entry points again (after installing a package in a running process; tests)."""
        self._loaded = False

    def __getitem__(self, name: str) -> Spec:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())
