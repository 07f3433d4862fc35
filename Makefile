# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of PyTorch that CI uses; a GPU user installs torch separately (see README).
TORCH_PIN ?= torch==2.13.0
BACKENDS ?= jax tensorflow torch
DEMO_BACKEND ?= torch

# pipefail: a lane's `| sed` must not hide pytest's exit status.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: demo test test-core test-backends test-lane-core test-lane-compiled install clean

$(VENV)/.stamp-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[torch]"
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q -e ".[torch,test,weights,export,serve]"
	touch $@

install: $(VENV)/.stamp-base

demo: $(VENV)/.stamp-base
	KERAS_BACKEND=$(DEMO_BACKEND) $(PY) cli.py demo --out demo

# Two lanes at once, one per core of a CI machine: most of the suite is single-threaded (graph building, XLA
# and TensorFlow compiles, Python data work), so two suites side by side take little longer than one. Each line
# says its lane; a failure in either fails `make test`.
test: $(VENV)/.stamp-test
	$(MAKE) -j2 test-lane-core test-lane-compiled

# Lane 1: the backend-independent tests, less those that share the tiny demo. Lane 2: each backend's tests, then
# the demo's (measured on CI: the lanes then take about as long as each other).
test-lane-core:
	$(MAKE) test-core CORE_TESTS='not backend and not demo' 2>&1 | sed -u 's/^/[core] /'

test-lane-compiled:
	{ $(MAKE) test-backends; a=$$?; $(MAKE) test-core CORE_TESTS='demo and not backend'; b=$$?; \
	  exit $$((a || b)); } 2>&1 | sed -u 's/^/[backends] /'

# Backend-independent tests (data, metrics, CLI, cross-backend save/load via subprocesses), run in-process
# on the backend that compiles fastest on a CPU: torch where installed, else tensorflow.
CORE_TESTS ?= not backend
test-core:
	@b=tensorflow; $(PY) -c "import torch" 2>/dev/null && b=torch; \
	echo "=== backend-independent tests ($(CORE_TESTS); KERAS_BACKEND=$$b) ==="; \
	KERAS_BACKEND=$$b $(PY) -m pytest -m "$(CORE_TESTS)" -q --durations=30

# Backend tests once per backend; torch only where it is installed. A failing backend does not stop the
# others (one CI run reports every backend); the lane fails if any did.
test-backends:
	@failed=""; for b in $(BACKENDS); do \
	  if [ $$b = torch ] && ! $(PY) -c "import torch" 2>/dev/null; then echo "torch not installed: skipping torch backend tests"; continue; fi; \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(PY) -m pytest -m backend -q --durations=20 || failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then echo "backend tests failed under:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) demo .pytest_cache
