# The entry points: `make demo` (set up + main job: `probekit run` on the shipped checkpoint),
# `make test` (set up + lint + tests, the documentation site's strict build included) and `make docs`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROBEKIT := $(VENV)/bin/probekit

.PHONY: setup data demo test lint docs bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel, rather than a CUDA build pulled in as a dependency
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

setup: $(VENV)/.installed

data:
	sh experiments/fetch_fashion_mnist.sh

demo: setup data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sh experiments/demo.sh

test: setup lint
	$(PY) -m pytest -q

# style and architecture: the formatter's output, the linter, and the package's layer contract
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

docs: setup
	$(PY) -m mkdocs build --strict

bench: setup data
	$(PY) experiments/bench.py

clean:
	rm -rf $(VENV) out site
