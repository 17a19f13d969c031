"""mypy on the package against a baseline that can only shrink.

diffusers, transformers and h5py are partly untyped, and the package predates its type checker,
so ``mypy`` reports errors that are recorded, not fixed yet, in ``.ci/mypy-baseline.txt`` (one
``path: [code] message`` per error, without line numbers, so that edits elsewhere in a file do
not move them). This script fails on any error that is not in the baseline, and on a baseline
entry that no longer occurs (run with ``--update`` to drop it: the count only falls).

    python .ci/typecheck.py            # make lint runs this
    python .ci/typecheck.py --update   # after fixing errors: rewrite the baseline
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".ci" / "mypy-baseline.txt"
LINE = re.compile(r"^(?P<path>[^:]+):\d+: error: (?P<message>.*?)\s+\[(?P<code>[a-z-]+)\]$")


def current_errors() -> Counter[str]:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty", "--show-error-codes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1):
        sys.exit(f"mypy failed to run:\n{done.stdout}{done.stderr}")
    errors: Counter[str] = Counter()
    for line in done.stdout.splitlines():
        found = LINE.match(line)
        if found:
            errors[f"{found['path']}: [{found['code']}] {found['message']}"] += 1
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline to the current errors")
    args = parser.parse_args()
    errors = current_errors()
    if args.update:
        BASELINE.write_text("".join(f"{entry}\n" for entry in sorted(errors.elements())))
        print(f"typecheck: baseline now {sum(errors.values())} errors")
        return 0
    baseline = Counter(line for line in BASELINE.read_text().splitlines() if line.strip())
    new, fixed = errors - baseline, baseline - errors
    for entry in sorted(new.elements()):
        print(f"new type error: {entry}")
    if fixed:
        print(f"{sum(fixed.values())} baseline errors no longer occur: run `python .ci/typecheck.py --update`")
    print(f"typecheck: {sum(errors.values())} errors, baseline {sum(baseline.values())}, {sum(new.values())} new")
    return 1 if new or fixed else 0


if __name__ == "__main__":
    sys.exit(main())
