"""Settings written once: flags, YAML and the reference table generated from a dataclass's fields."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from probekit.core.errors import ProbekitError
from probekit.core.settings import (
    add_arguments,
    markdown_table,
    read_yaml,
    setting,
    to_argv,
    values_from_args,
)


@dataclass
class Toy:
    steps: int = setting(10, help="how many steps")
    rate: float = setting(0.5, help="a rate")
    name: str | None = setting(None, help="a name", default_text="none given")
    sizes: list[int] = setting(help="sizes", default_factory=lambda: [1, 2])
    scales: list[float] = setting(help="scales", default_factory=lambda: [1.0])
    words: list[str] = setting(help="words", default_factory=lambda: ["a"])
    files: list[str] = setting(help="paths", nargs="*", default_factory=list)
    axis: Literal["t", "sigma"] = setting("sigma", help="an axis")
    shown: bool = setting(True, help="shown")
    extra: bool = setting(False, help="extra", flag="--with-extra")
    silent: bool = setting(False, help="silent", negate="")


def _parser(keep_defaults: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, Toy, keep_defaults=keep_defaults)
    return parser


def test_flags_are_read_by_the_fields_types():
    args = _parser().parse_args(
        ["--steps", "3", "--rate", "2", "--sizes", "4,5", "--scales", "0.1", "--words", "x,y", "--files", "p q"]
        + ["--axis", "t", "--no-shown", "--with-extra", "--silent"]
    )
    assert values_from_args(args, Toy) == {
        "steps": 3,
        "rate": 2.0,
        "sizes": [4, 5],
        "scales": [0.1],
        "words": ["x", "y"],
        "files": ["p q"],
        "axis": "t",
        "shown": False,
        "extra": True,
        "silent": True,
    }


def test_flags_not_given_are_not_values_and_defaults_are_in_the_help():
    parser = _parser()
    assert values_from_args(parser.parse_args([]), Toy) == {}
    text = parser.format_help()
    assert "(default 10)" in text and "(default none given)" in text and "(default 1,2)" in text
    kept = _parser(keep_defaults=True).parse_args([])
    assert (kept.steps, kept.sizes, kept.shown) == (10, [1, 2], True)


def test_literal_settings_are_choices_and_bad_lists_are_refused():
    parser = _parser()
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--axis", "logsnr"])
    with pytest.raises(argparse.ArgumentError, match="not a comma-separated list of integers"):
        parser.parse_args(["--sizes", "1,x"])
    with pytest.raises(SystemExit):  # negate="" leaves no --no-silent
        parser.parse_args(["--no-silent"])


def test_to_argv_round_trips_through_the_generated_flags():
    config = Toy(steps=7, name="n", sizes=[3], scales=[0.5, 2.0], files=["a b", "c"], axis="t", shown=False, extra=True)
    argv = to_argv(config)
    assert Toy(**values_from_args(_parser().parse_args(argv), Toy)) == config
    assert to_argv(Toy()) == []


def test_yaml_values_are_read_and_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 4\nsizes: 7\nscales: '0.1,1'\nwords: a,b\nfiles: [x.png]\naxis: t\nshown: false\n")
    assert read_yaml(str(path), Toy) == {
        "steps": 4,
        "sizes": [7],
        "scales": [0.1, 1.0],
        "words": ["a", "b"],
        "files": ["x.png"],
        "axis": "t",
        "shown": False,
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("stepz: 3\n", "unknown setting(s) stepz (did you mean steps?)"),
        ("zzzz: 3\n", "unknown setting(s) zzzz;"),
        ("axis: logsnr\n", "axis: 'logsnr' is not one of t, sigma"),
        ("steps: many\n", "steps: 'many' is not an integer"),
        ("sizes: [1, x]\n", "is not a list of integers"),
        ("shown: 3\n", "shown: 3 is not true or false"),
        ("- a\n", "must be a mapping"),
        ("a: [\n", "is not valid YAML"),
    ],
)
def test_bad_yaml_is_a_one_line_error(text, message, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ProbekitError) as caught:
        read_yaml(str(path), Toy)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_reference_table_has_one_row_per_setting():
    rows = markdown_table(Toy).splitlines()[2:]
    assert len(rows) == 11
    assert rows[0] == "| `steps` | `--steps` | int | `10` | how many steps |"
    assert "`--with-extra`, `--no-extra`" in rows[9] and "t / sigma" in rows[7]
