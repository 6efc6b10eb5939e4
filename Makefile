# Both targets bootstrap .venv themselves on a fresh machine (Python 3.11 + pip).
# torch is installed first and pinned: `pip install torch==2.13.0` takes the local
# CPU build here, while a range would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH_VERSION := 2.13.0

.PHONY: run test lint clean system-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --progress-bar off "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --progress-bar off -e ".[dev]"
	touch $(STAMP)

# Debian packages the tests use: espeak-ng makes the speech of the procedural data.
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng; \
	  else echo "please install espeak-ng (Debian: sudo apt-get install espeak-ng)" >&2; exit 1; fi; }

run: $(STAMP)
	$(VENV)/bin/ihuman info

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
