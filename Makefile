# medcl: two commands on a fresh machine.
#   make demo   creates .venv, installs medcl, pretrains a tiny CLIP, runs experiments/quickstart.yaml on CPU
#   make test   creates .venv if needed, installs with the dev extra, runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast install bench gpu-check clean help

help:
	@echo "make demo | make test | make test-fast | make bench | make gpu-check | make clean"
	@echo "  gpu-check: build/gpu-carry/ (medcl + the wheels a bare GPU machine lacks) and the command to run there (docs/gpu.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the project metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A short CLIP pretraining on synthmed captions (reused when already done), then the sequence.
demo: $(STAMP)
	$(BIN)/medcl pretrain experiments/pretrain_synthmed.yaml
	$(BIN)/medcl run experiments/quickstart.yaml --fresh

test: $(STAMP)
	$(BIN)/python -m pytest tests

# Unit tests only (no Ray, no training).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

bench: $(STAMP)
	$(BIN)/python experiments/benchmarks/quickstart_time.py
	$(BIN)/python experiments/benchmarks/step_overhead.py

# The wheels a bare GPU machine (Python 3.12, torch, no Ray/open_clip/FAISS/Optuna, no network) needs to run
# experiments/benchmarks/gpu_check.py, pinned to this venv's versions; sized against the 64 MiB a call
# carries; then the command to run there (docs/gpu.md). Needs the package index (pip download) here.
GPU_CARRY := build/gpu-carry
GPU_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64,--platform $(p))

gpu-check: $(STAMP)
	rm -rf $(GPU_CARRY) build/lib build/bdist.* && mkdir -p $(GPU_CARRY)  # build/lib: setuptools would reuse stale modules
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(GPU_CARRY) .
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) --dest $(GPU_CARRY) $$($(BIN)/python experiments/benchmarks/gpu_check.py --carry-requirements)
	$(BIN)/python experiments/benchmarks/gpu_check.py --check-carry $(GPU_CARRY)

clean:
	rm -rf runs .pytest_cache
