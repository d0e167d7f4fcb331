# diffrecon: `make demo` runs the main job, `make test` runs the test suite.
# Both create (or reuse) .venv and install what they need first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.diffrecon-installed
DEMO_OUT ?= demo_output
# CPU-only machines get the pinned local CPU build of torch; machines with a CUDA driver get any recent torch.
TORCH_SPEC := $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then echo "torch>=2.2"; else echo "torch==2.13.0"; fi)

.PHONY: setup demo test test-fast docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/diffrecon demo --out $(DEMO_OUT) --overwrite

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadgroup -q
	$(MAKE) docs

test-fast: setup
	$(PY) -m pytest -n 2 -q -m "not slow"

docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: setup
	$(PY) benchmarks/ct_projector.py

clean:
	rm -rf site $(DEMO_OUT) .pytest_cache
