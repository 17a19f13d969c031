# The entry points: `make demo` (set up + main job: `probekit run` on the shipped checkpoint),
# `make test` (set up + lint + tests, the documentation site's strict build included) and `make docs`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROBEKIT := $(VENV)/bin/probekit

.PHONY: setup data demo test test-fast lint docs bench clean lock

# Every package, transitive ones included, comes from the lock (requirements/lock.txt, made by
# `make lock` with uv from setup.cfg's extras and requirements/pins.in); setup.cfg keeps ranges for
# users who `pip install -e .` without it.
LOCK := requirements/lock.txt

$(VENV)/.installed: setup.cfg pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) pip
	# torch first and pinned: the CPU wheel, rather than a CUDA build pulled in as a dependency
	$(PY) -m pip install -q -c $(LOCK) torch
	$(PY) -m pip install -q -c $(LOCK) -e '.[test,docs]'
	touch $@

setup: $(VENV)/.installed

data:
	sh experiments/fetch_fashion_mnist.sh

demo: setup data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sh experiments/demo.sh

test: setup lint
	$(PY) -m pytest -q

# every module's fast tests, on both cores: the tier to run while working (`make test` runs everything)
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not subprocess and not browser" -n 2

# style, architecture and types: the formatter's output, the linter, the package's layer contract,
# and mypy against its shrinking baseline (.ci/typecheck.py)
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) .ci/typecheck.py

docs: setup
	$(PY) -m mkdocs build --strict

bench: setup data
	$(PY) experiments/bench.py

# Refresh the lock after changing a dependency range in setup.cfg or a pin in requirements/pins.in,
# or to move to newer releases on purpose; commit the result (docs/guide/dependencies.md).
lock: setup
	$(PY) -m pip install -q -c $(LOCK) uv
	$(VENV)/bin/uv pip compile setup.cfg requirements/pins.in --extra test --extra docs --extra hf --extra vision \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" \
		--upgrade -o $(LOCK)

clean:
	rm -rf $(VENV) out site
