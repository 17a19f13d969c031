"""Model families that ``probekit train`` trains: a registry of :class:`TrainFamily` specs."""

from __future__ import annotations

from probekit.core.errors import ProbekitError
from probekit.train.config import FAMILY_NAMES
from probekit.train.families.base import TrainFamily
from probekit.train.families.ddpm import DDPMFamily
from probekit.train.families.dit import DiTFamily
from probekit.train.families.edm import EDMFamily
from probekit.train.families.flow import FlowFamily

FAMILIES: dict[str, TrainFamily] = {f.name: f for f in (DDPMFamily(), DiTFamily(), EDMFamily(), FlowFamily())}
assert tuple(FAMILIES) == FAMILY_NAMES, "register every family in config.FAMILY_NAMES too"


def get_family(name: str) -> TrainFamily:
    if name not in FAMILIES:
        raise ProbekitError(f"unknown training family {name!r}: use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


__all__ = ["FAMILIES", "TrainFamily", "get_family"]
