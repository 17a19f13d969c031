import gc

import pytest

from probekit.core import interrupt
from probekit.pipeline import RunConfig, Runner, Step, StepPlan

# the finaliser's KeyboardInterrupt is meant to be ignored by Python (that is the case under test)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _StopsWhenCollected:
    """Requests a stop from its finaliser, where Python prints and ignores the KeyboardInterrupt."""

    def __del__(self) -> None:
        interrupt.request_stop()


@pytest.fixture(autouse=True)
def _no_request_left():
    interrupt.clear()
    yield
    interrupt.clear()


def test_a_stop_raised_in_a_finaliser_is_swallowed_but_remembered():
    _StopsWhenCollected()  # collected at once: the KeyboardInterrupt is printed and ignored
    gc.collect()
    with pytest.raises(KeyboardInterrupt):
        interrupt.check()
    interrupt.clear()
    interrupt.check()  # nothing pending


def test_the_runner_stops_before_its_next_command_after_a_swallowed_stop(tmp_path):
    ran = []

    def execute(argv):
        ran.append(argv[0])
        if argv[0] == "first":
            _StopsWhenCollected()

    plan = StepPlan([["first"], ["second"]], [tmp_path / "never"])
    config = RunConfig(model="M", data="d", out=str(tmp_path / "o"), name="m", cache_dir=str(tmp_path / "c"))
    runner = Runner(config, execute, steps=[Step("two commands", lambda c, p: plan)])
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert ran == ["first"]
