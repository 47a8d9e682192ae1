# medcl: two commands on a fresh machine.
#   make demo   creates .venv, installs medcl, pretrains a tiny CLIP, runs experiments/quickstart.yaml on CPU
#   make test   creates .venv if needed, installs with the dev extra, runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast install bench clean help

help:
	@echo "make demo | make test | make test-fast | make bench | make clean"

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

clean:
	rm -rf runs .pytest_cache
