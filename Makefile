# Two commands do all set-up on a fresh machine:
#   make demo   -- create/refresh .venv, build the bundled sample, run the pipeline end to end
#   make test   -- create/refresh .venv, run the whole test suite (slow end-to-end tests included)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch that this kind of machine ships; on a GPU box use `make TORCH_SPEC=torch ...`.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= out/demo

.PHONY: venv demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, transformers, ray, deepspeed, pyarrow, soundfile, soxr, tokenization" 2>/dev/null \
		|| (echo "venv install failed" >&2; exit 1)
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m pipelines.demo --output $(DEMO_OUT)

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) out
