import io
import logging

import pytest
from tqdm.auto import tqdm

from probekit.core import verbosity
from probekit.core.errors import ProbekitError


@pytest.fixture(autouse=True)
def restore():
    # An in-process CLI call of an earlier test on this worker may have left a level set (--quiet).
    verbosity.set_verbosity(None)
    yield
    verbosity.set_verbosity(None)


def _bar_output(progress: bool) -> str:
    stream = io.StringIO()
    for _ in tqdm(range(3), file=stream, disable=not verbosity.progress_enabled(progress)):
        pass
    return stream.getvalue()


def test_quiet_from_the_environment_turns_every_bar_off(monkeypatch):
    monkeypatch.setenv("PROBEKIT_VERBOSITY", "quiet")
    assert _bar_output(True) == ""
    monkeypatch.setenv("PROBEKIT_VERBOSITY", "info")
    assert "3/3" in _bar_output(True)
    assert _bar_output(False) == ""  # a caller's own progress=False still wins


def test_the_set_level_overrides_the_environment_and_sets_the_logger(monkeypatch):
    monkeypatch.setenv("PROBEKIT_VERBOSITY", "quiet")
    verbosity.set_verbosity("debug")
    assert verbosity.verbosity() == "debug" and "3/3" in _bar_output(True)
    assert logging.getLogger("probekit").level == logging.DEBUG
    verbosity.set_verbosity(None)
    assert verbosity.verbosity() == "quiet"
    with pytest.raises(ProbekitError, match="use quiet, info, debug"):
        verbosity.set_verbosity("loud")


def test_every_command_takes_quiet_and_verbose():
    from probekit.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        flags = {flag for action in command._actions for flag in action.option_strings}
        assert {"--quiet", "--verbose"} <= flags, name
