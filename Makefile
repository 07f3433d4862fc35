# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of PyTorch that CI uses; a GPU user installs torch separately (see README).
TORCH_PIN ?= torch==2.13.0
BACKENDS ?= jax tensorflow torch
DEMO_BACKEND ?= torch

.PHONY: demo test test-core test-backends install clean

$(VENV)/.stamp-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[torch]"
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q -e ".[torch,test]"
	touch $@

install: $(VENV)/.stamp-base

demo: $(VENV)/.stamp-base
	KERAS_BACKEND=$(DEMO_BACKEND) $(PY) cli.py demo --out demo

test: $(VENV)/.stamp-test
	$(MAKE) test-core
	$(MAKE) test-backends

# Backend-independent tests (data, metrics, CLI, cross-backend save/load via subprocesses), run in-process
# on the backend that compiles fastest on a CPU: torch where installed, else tensorflow.
test-core:
	@b=tensorflow; $(PY) -c "import torch" 2>/dev/null && b=torch; \
	echo "=== backend-independent tests (KERAS_BACKEND=$$b) ==="; \
	KERAS_BACKEND=$$b $(PY) -m pytest -m "not backend" -q --durations=30

# Backend tests once per backend; torch only where it is installed.
test-backends:
	@set -e; for b in $(BACKENDS); do \
	  if [ $$b = torch ] && ! $(PY) -c "import torch" 2>/dev/null; then echo "torch not installed: skipping torch backend tests"; continue; fi; \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(PY) -m pytest -m backend -q --durations=20; \
	done

clean:
	rm -rf $(VENV) demo .pytest_cache
