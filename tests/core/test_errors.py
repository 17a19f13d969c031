import re
from pathlib import Path

import pytest

from probekit.core.errors import ConfigError, first_line
from probekit.features.extraction import ExtractConfig, plan_extraction
from probekit.models import load_backbone
from probekit.probes import ProbeSettings

PACKAGE = Path(__file__).resolve().parents[2] / "probekit"


def test_config_errors_name_the_field_in_the_library():
    backbone = load_backbone("pixels")
    with pytest.raises(ConfigError) as caught:
        plan_extraction(backbone, ExtractConfig(draws=0))
    assert str(caught.value) == "draws must be at least 1, got 0"
    assert caught.value.naming("--draws") == "--draws must be at least 1, got 0"
    with pytest.raises(ConfigError, match=r"^knn_k needs one or more"):
        ProbeSettings(knn_k=())


def test_every_config_field_in_an_error_is_a_flag_of_the_command_line():
    from probekit.cli import FLAG_OF_FIELD, build_parser

    fields = set()
    for path in PACKAGE.rglob("*.py"):
        fields |= set(re.findall(r'ConfigError\(\s*"(\w+)"', path.read_text()))
    assert {"draws", "batch_size", "linear_C", "knn_k"} <= fields  # the scan finds them
    parser = build_parser()
    flags = {
        option
        for action in parser._subparsers._group_actions  # noqa: SLF001 -- argparse keeps subcommands here
        for sub in action.choices.values()
        for sub_action in sub._actions
        for option in sub_action.option_strings
    }
    for field in fields:
        flag = FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))
        assert flag in flags, (field, flag)


def test_first_line_drops_colour_codes_and_falls_back_to_the_type():
    assert first_line(ValueError("\x1b[31mbad\x1b[0m value\nsecond line")) == "bad value"
    assert first_line(KeyError()) == "KeyError"


def test_the_command_line_names_the_flag(tmp_path, capsys):
    from probekit.cli import main

    assert (
        main(["extract", "--model", "pixels", "--data", "digits", "--draws", "0", "--out", str(tmp_path / "f.h5")]) == 2
    )
    assert capsys.readouterr().err.strip() == "probekit: error: --draws must be at least 1, got 0"
    assert main(["probe", "--cache", str(tmp_path / "f.h5"), "--k", "0", "--out", str(tmp_path / "r.csv")]) == 2
    assert capsys.readouterr().err.strip().startswith("probekit: error: --k needs one or more neighbour counts")
