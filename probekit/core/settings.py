"""Settings written once: a config dataclass field carries its help, flag and choices as metadata,
and the command-line flags, the YAML loading and the CLI reference are generated from it.

A field is declared with :func:`setting`::

    @dataclass
    class RunConfig:
        seed: int = setting(0, help="seed of the noise and the probes")
        x: Literal["t", "sigma", "logsnr"] = setting("sigma", help="noise axis of the curves")

Its type says how a flag's text is read (``int``, ``float``, ``str``, ``list[int]``, ``list[float]``
and ``list[str]`` as comma-separated lists, ``bool`` as a pair of ``--name`` / ``--no-name``
switches, a ``Literal`` as the choices); its default goes into the help. The pattern is that of
lm-evaluation-harness's ``EvaluatorConfig`` (``field(metadata={"help": ...})``).
"""

from __future__ import annotations

import argparse
import difflib
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, Literal

from probekit.core.errors import ProbekitError

#: what a list of each item type is called in an error message
_ITEM_WORDS = {int: "integers", float: "numbers", str: "names"}


def setting(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    negate: str | None = None,
    metavar: str | None = None,
    nargs: str | None = None,
    cli: bool = True,
    default_text: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    repeatable: bool = False,
    yaml_as_is: str | None = None,
) -> Any:
    """A dataclass field with its help and flag: ``flag`` when not ``--`` + the name with dashes,
    ``negate`` the switch that turns a boolean off (default ``--no-NAME``; ``""`` for none),
    ``nargs="*"`` for a list given as separate words (paths) rather than comma-separated,
    ``cli=False`` for a setting read from YAML only, ``default_text`` for a default that the help
    should describe in words (e.g. "every layer" for None), ``repeatable`` for a flag that may be
    given several times (its values arrive as a list), ``yaml_as_is`` for a YAML value passed on
    unchecked to the code that reads it (the text names its type in the reference table).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "negate": negate,
        "metavar": metavar,
        "nargs": nargs,
        "cli": cli,
        "default_text": default_text,
        "repeatable": repeatable,
        "yaml_as_is": yaml_as_is,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Setting:
    """One field of a config dataclass as the command line and YAML see it."""

    def __init__(self, spec: Field, kind: Any) -> None:
        self.name = spec.name
        self.meta = spec.metadata
        self.optional = type(None) in typing.get_args(kind)
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        self.kind = args[0] if self.optional and len(args) == 1 else kind
        self.default = spec.default_factory() if spec.default_factory is not MISSING else spec.default

    @property
    def flag(self) -> str:
        return self.meta.get("flag") or "--" + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...] | None:
        return typing.get_args(self.kind) if typing.get_origin(self.kind) is Literal else None

    @property
    def item(self) -> type | None:
        """The item type of a list setting, else None."""
        return typing.get_args(self.kind)[0] if typing.get_origin(self.kind) is list else None

    @property
    def is_bool(self) -> bool:
        return self.kind is bool

    @property
    def negate(self) -> str | None:
        """The switch that turns a boolean setting off (None: it has none)."""
        negate = self.meta.get("negate")
        if negate == "":
            return None
        return negate or "--no-" + self.name.replace("_", "-")

    def default_text(self) -> str:
        if self.meta.get("default_text"):
            return str(self.meta["default_text"])
        if self.is_bool:
            return "on" if self.default else "off"
        if isinstance(self.default, list):
            return ",".join(str(v) for v in self.default) or "none"
        return str(self.default)

    def parse_text(self, text: str) -> Any:
        """A flag's text as this setting's value (argparse's ``type``)."""
        if self.item is not None:
            items = [part.strip() for part in text.split(",") if part.strip()]
            try:
                return [self.item(part) for part in items]
            except ValueError:
                example = {int: "1,11,21", float: "0.1,1", str: "linear,knn"}[self.item]
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not a comma-separated list of {_ITEM_WORDS[self.item]} (e.g. {example})"
                ) from None
        if self.kind in (int, float):
            try:
                return self.kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a {self.kind.__name__}") from None
        return text

    def from_yaml(self, value: Any, source: str) -> Any:
        """A YAML value as this setting's value: lists from ``a,b`` or one item, checked types."""
        if value is None and self.optional:
            return None
        if self.meta.get("yaml_as_is"):
            return value
        where = f"{source}: {self.name}"
        if self.is_bool:
            if not isinstance(value, bool):
                raise ProbekitError(f"{where}: {value!r} is not true or false")
            return value
        if self.item is not None:
            if isinstance(value, str):
                return self.parse_text_or_fail(value, where)
            values = value if isinstance(value, list) else [value]  # one item for a list of one
            if not all(_is_a(v, self.item) for v in values):
                raise ProbekitError(f"{where}: {value!r} is not a list of {_ITEM_WORDS[self.item]}")
            return values  # as written (1 stays 1 for a float list): the commands a run prints keep them
        if self.choices is not None:
            if value not in self.choices:
                raise ProbekitError(f"{where}: {value!r} is not one of {', '.join(self.choices)}")
            return value
        if self.kind is str:
            if isinstance(value, list):  # [1, 5, all] for "1,5,all"
                return ",".join(str(v) for v in value)
            if isinstance(value, dict):
                raise ProbekitError(f"{where}: {value!r} is not a text value")
            return str(value)
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ProbekitError(f"{where}: {value!r} is not an integer")
        if self.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ProbekitError(f"{where}: {value!r} is not a number")
        return value

    def parse_text_or_fail(self, text: str, where: str) -> Any:
        try:
            return self.parse_text(text)
        except argparse.ArgumentTypeError as err:
            raise ProbekitError(f"{where}: {err}") from None

    def to_argv(self, value: Any) -> list[str]:
        """The flags that give this setting ``value`` (empty for its default)."""
        if value == self.default:
            return []
        if self.is_bool:
            return [self.flag] if value else ([self.negate] if self.negate else [])
        if value is None:
            return []
        if isinstance(value, list):
            return [self.flag, *map(str, value)] if self.meta.get("nargs") else [self.flag, ",".join(map(str, value))]
        return [self.flag, str(value)]


def _is_a(value: Any, item: type) -> bool:
    """``value`` is a YAML item of a list of ``item`` (a bool is no number; a number may be a name)."""
    if isinstance(value, bool):
        return False
    if item is float:
        return isinstance(value, (int, float))
    if item is str:
        return isinstance(value, (str, int, float))
    return isinstance(value, item)


def settings_of(config_class: type) -> list[Setting]:
    """The settings of a config dataclass, in field order (types resolved from the annotations)."""
    hints = typing.get_type_hints(config_class)
    return [Setting(spec, hints[spec.name]) for spec in fields(config_class) if "help" in spec.metadata]


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, config_class: type, *, keep_defaults: bool = False
) -> None:
    """One flag per setting of ``config_class`` (a ``--name`` / ``--no-name`` pair for booleans).

    ``keep_defaults=False`` leaves every flag's argparse default None, so that only the flags
    given override another source (a YAML file); the field's default is then named in the help.
    """
    for item in settings_of(config_class):
        if not item.meta.get("cli", True):
            continue
        default = item.default if keep_defaults else None
        text = item.meta["help"]
        if not keep_defaults:
            text = f"{text} (default {item.default_text()})"
        if item.is_bool:
            parser.add_argument(item.flag, dest=item.name, action="store_const", const=True, default=default, help=text)
            if item.negate:
                parser.add_argument(
                    item.negate, dest=item.name, action="store_const", const=False, help=f"turns {item.flag} off"
                )
            continue
        kwargs: dict[str, Any] = {"dest": item.name, "default": default, "help": text}
        if item.meta.get("repeatable"):
            kwargs["action"] = "append"
        if item.choices is not None:
            kwargs["choices"] = item.choices
        elif item.meta.get("nargs"):
            kwargs["nargs"] = item.meta["nargs"]
        elif item.kind is not str:
            kwargs["type"] = item.parse_text
        if item.meta.get("metavar"):
            kwargs["metavar"] = item.meta["metavar"]
        parser.add_argument(item.flag, **kwargs)


def values_from_args(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The settings that the parsed flags give (those left None are not given)."""
    return {
        item.name: getattr(args, item.name)
        for item in settings_of(config_class)
        if getattr(args, item.name, None) is not None
    }


def to_argv(config: object) -> list[str]:
    """Flags that, parsed by :func:`add_arguments`' flags, give ``config`` back (defaults left out)."""
    argv: list[str] = []
    for item in settings_of(type(config)):
        if item.meta.get("cli", True):  # a YAML-only setting has no flag to give it
            argv += item.to_argv(getattr(config, item.name))
    return argv


def read_yaml(path: str, config_class: type, *, flag: str = "--config") -> dict[str, Any]:
    """The settings of a YAML mapping (``name: value``, dashes or underscores), checked against
    ``config_class``: an unknown key is refused with the closest known name.
    """
    return values_from_mapping(load_yaml_mapping(path, flag=flag), config_class, f"{flag} {path}")


def load_yaml_mapping(path: str, *, flag: str = "--config") -> dict[Any, Any]:
    """The mapping a YAML settings file holds, unchecked (a missing file or another shape refused)."""
    import yaml

    source = Path(path)
    if not source.is_file():
        raise ProbekitError(f"{flag} {path} does not exist: give a YAML file of settings")
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as err:
        raise ProbekitError(f"{flag} {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ProbekitError(f"{flag} {path} must be a mapping of setting: value")
    return raw


def values_from_mapping(raw: Mapping[Any, Any], config_class: type, source: str) -> dict[str, Any]:
    """``raw`` (YAML-like values) as settings of ``config_class``; unknown keys refused in one line."""
    known = {item.name: item for item in settings_of(config_class)}
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        named = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(known), n=1)
            named.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise ProbekitError(
            f"{source}: unknown setting(s) {', '.join(named)}; the settings are those of `probekit run --help`"
        )
    return {key: known[key].from_yaml(value, source) for key, value in values.items()}


def markdown_table(config_class: type) -> str:
    """The settings of ``config_class`` as a Markdown table: YAML key, flag, type, default, meaning."""
    lines = ["| YAML key | flag | type | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for item in settings_of(config_class):
        flags = f"`{item.flag}`" if item.meta.get("cli", True) else "(YAML only)"
        if item.is_bool and item.negate and item.meta.get("cli", True):
            flags += f", `{item.negate}`"
        kind = (
            str(item.meta["yaml_as_is"])
            if item.meta.get("yaml_as_is")
            else " / ".join(item.choices)
            if item.choices
            else f"list of {_ITEM_WORDS[item.item]}"
            if item.item
            else getattr(item.kind, "__name__", str(item.kind))
        )
        meaning = str(item.meta["help"]).replace("|", "\\|")
        lines.append(f"| `{item.name}` | {flags} | {kind} | `{item.default_text()}` | {meaning} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "Setting",
    "setting",
    "settings_of",
    "add_arguments",
    "values_from_args",
    "to_argv",
    "read_yaml",
    "load_yaml_mapping",
    "values_from_mapping",
    "markdown_table",
]
