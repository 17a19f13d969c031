"""``probekit run``: the whole DDAE question for one model as an ordered list of steps.

Each step is a list of ordinary ``probekit`` commands (the ones a user could type by hand, printed
as they run) and the files they produce. The runner executes the steps in order and records a
stamp per finished step under ``CACHES/.steps/``; a stamp holds a fingerprint of the step's
commands chained with every earlier step's, so a re-run skips exactly the steps whose commands and
inputs are unchanged and redoes the rest. An extraction stopped part-way is resumed, not restarted
(the cache format's own resume); any other interrupted step is redone from its start, which gives
the same files because every command is deterministic for a given seed.

To add a step, append a :class:`Step` to :func:`all_steps` in ``steps.py`` (its ``plan`` returns the
commands, or ``None`` when the configuration turns it off). The package: ``config`` (settings and
their YAML file), ``plan`` (the run's files, what a step is), ``steps`` and ``dense_steps`` (the
planners), ``runner`` (stamps, resume, execution).
"""

from probekit.pipeline.config import RunConfig
from probekit.pipeline.plan import Command, RunPaths, Step, StepPlan
from probekit.pipeline.runner import Runner, format_command, run_all
from probekit.pipeline.steps import STEPS, all_steps

__all__ = [
    "all_steps",
    "Command",
    "RunConfig",
    "RunPaths",
    "Step",
    "StepPlan",
    "STEPS",
    "Runner",
    "run_all",
    "format_command",
]
