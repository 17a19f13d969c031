"""The runner of ``probekit run``: each step's commands in order, with a stamp per finished step."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from probekit.core import interrupt
from probekit.core.atomic import publish
from probekit.core.errors import ProbekitError
from probekit.pipeline.config import RunConfig
from probekit.pipeline.plan import Command, RunPaths, Step, StepPlan
from probekit.pipeline.steps import all_steps

_PRINT = print  # the runner's own messages (kept apart from a captured command's stdout)


def _cache_complete(plan: StepPlan) -> bool:
    """The step's cache is finished (stopped after closing it but before its stamp was written)."""
    from probekit.features.cache import FeatureCache

    try:
        with FeatureCache(plan.outputs[0]) as cache:
            return cache.complete
    except (OSError, ProbekitError):
        return False


_QUIET = {"extract", "probe", "fuse"}  # commands with a progress bar that --quiet turns off


def format_command(argv: Command) -> str:
    return "probekit " + " ".join(shlex.quote(a) for a in argv)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    publish(tmp, path)


class Runner:
    """Runs the steps (default :func:`all_steps`, with the registered dense tasks) for one
    configuration; ``execute`` runs one probekit command in-process.
    """

    def __init__(
        self, config: RunConfig, execute: Callable[[Command], None], steps: Sequence[Step] | None = None
    ) -> None:
        self.config = config
        self.execute = execute
        out = Path(config.out)
        self.paths = RunPaths(
            out=out, caches=Path(config.cache_dir) if config.cache_dir else out / "caches", label=config.label
        )
        self.steps = all_steps() if steps is None else steps

    def _stamp(self, step: Step) -> Path:
        return self.paths.steps / (re.sub(r"[^a-z0-9]+", "-", step.name.lower()) + ".json")

    def run(self) -> Path:
        """Run every step not already done for this configuration; return the report's path."""
        self.paths.out.mkdir(parents=True, exist_ok=True)
        self.paths.steps.mkdir(parents=True, exist_ok=True)
        chain = hashlib.sha256(b"probekit run")
        planned = [(step, step.plan(self.config, self.paths)) for step in self.steps]
        active = [(step, plan) for step, plan in planned if plan is not None]
        for number, (step, plan) in enumerate(active, 1):
            for argv in plan.commands:
                chain.update(json.dumps(argv).encode())
            fingerprint = chain.hexdigest()
            stamp = self._stamp(step)
            record = json.loads(stamp.read_text()) if stamp.is_file() else {}
            header = f"== [{number}/{len(active)}] {step.name}"
            if (
                record.get("fingerprint") == fingerprint
                and record.get("state") == "done"
                and all(o.exists() for o in plan.outputs)
            ):
                _PRINT(f"{header}: done already, skipped")
                if plan.capture is not None:
                    _PRINT(plan.capture.read_text(), end="")
                continue
            # Resume only the same unfinished work; anything else is started over.
            resume = step.resumable and record.get("fingerprint") == fingerprint
            _PRINT(header + (": resuming" if resume and any(o.exists() for o in plan.outputs) else ""))
            _write_atomic(stamp, json.dumps({"fingerprint": fingerprint, "state": "started"}))
            captured, started = [], time.perf_counter()
            for folder in plan.fresh:  # written from scratch by the commands: a left-over is removed
                if folder.exists():
                    _PRINT(f"removing the unfinished {folder}")
                    shutil.rmtree(folder)
            if resume and _cache_complete(plan):
                plan = StepPlan([], plan.outputs)
            for argv in plan.commands:
                if step.resumable and not resume:
                    argv = argv + ["--overwrite"]
                if self.config.quiet and argv[0] in _QUIET:
                    argv = argv + ["--quiet"]
                interrupt.check()  # a stop request swallowed inside the previous command stops the run here
                _PRINT(format_command(argv), flush=True)
                if plan.capture is None:
                    self.execute(argv)
                else:
                    buffer = io.StringIO()
                    with contextlib.redirect_stdout(buffer):
                        self.execute(argv)
                    _PRINT(buffer.getvalue(), end="")
                    captured.append(f"$ {format_command(argv)}\n{buffer.getvalue()}")
            if plan.capture is not None:
                _write_atomic(plan.capture, "\n".join(captured))
            _PRINT(f"   ({step.name}: {time.perf_counter() - started:.0f} s)")
            missing = [str(o) for o in plan.outputs if not o.exists()]
            if missing:
                raise ProbekitError(f"step {step.name!r} finished without writing {', '.join(missing)}")
            _write_atomic(
                stamp,
                json.dumps(
                    {
                        "fingerprint": fingerprint,
                        "state": "done",
                        "commands": [format_command(a) for a in plan.commands],
                    }
                ),
            )
        return self.paths.report


def run_all(config: RunConfig, execute: Callable[[Command], None]) -> Path:
    """Run the whole question for ``config`` (see the module docstring); return the report's path."""
    return Runner(config, execute).run()
