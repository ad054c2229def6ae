# Two commands do all set-up on a fresh machine:
#   make demo   -- create/refresh .venv, build the bundled sample, run the pipeline end to end
#   make test   -- create/refresh .venv, install Chromium for the report test if missing (as root or with
#                  passwordless sudo; otherwise it stops and prints the one command to run), run the whole suite
# Sample speech needs no system package: without the espeak-ng program it comes from the library in
# the espeakng-loader wheel (a Python dependency).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch that this kind of machine ships; on a GPU box use `make TORCH_SPEC=torch ...`.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= out/demo
# pytest-xdist workers for make test: a test file per worker (module fixtures run once). The suite's Ray jobs
# spend half their time waiting on process start-ups and polls, so two workers fill a 2-core machine.
TEST_WORKERS ?= 2

# Debian packages the tests still need (the audit report renders in headless Chromium), by command they provide.
SYSTEM_PACKAGES := chromium:chromium chromedriver:chromium-driver

.PHONY: venv demo test system-packages clean

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

system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make test needs Debian packages:$$missing. Run once, then make test again:" >&2; \
		echo "  sudo apt-get install -y$$missing" >&2; exit 2; fi; \
	echo "installing$$missing (apt-get)"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q$$missing >/dev/null || \
		{ echo "apt-get install -y$$missing failed; install them, then make test again" >&2; exit 2; }

test: venv system-packages
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30 tests

clean:
	rm -rf $(VENV) out
