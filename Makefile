# Two commands matter on a fresh machine:  make demo  and  make test.  Everything else is optional.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv local-up local-down local-status demo test test-fast test-slow test-gce lint format bench faults soak report clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

venv: ## Create .venv and install everything (Python >= 3.12, sshd, the Pub/Sub emulator)
	@./scripts/bootstrap.sh

local-up: venv ## Start the local cloud (writes .local/env)
	@$(PY) -m localcloud up

local-down: ## Stop every process of the local cloud
	@if [ -x $(PY) ]; then $(PY) -m localcloud down; else echo "no $(VENV): nothing to stop"; fi

local-status: ## Which local cloud services run
	@$(PY) -m localcloud status

demo: venv ## The main job: a real two-experiment batch on the local cloud, end to end (KEEP=1 keeps it up)
	@$(PY) scripts/demo.py

test: ## The whole test suite (slow tier included) with coverage per package, then the gce tier
	@./scripts/bootstrap.sh --full
	@status=0; $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	  $(PY) scripts/coverage_summary.py || true; \
	  echo "gce tier: the seed batch and the lifecycle faults under Compute Engine's timings (x$(GCE_SCALE))"; \
	  LOCALCLOUD_PROFILE=gce LOCALCLOUD_SCALE=$(GCE_SCALE) $(PY) -m pytest -m gce -p no:cacheprovider --no-cov \
	    $(PYTEST_ARGS) || status=$$?; exit $$status

test-fast: venv ## Tests without the slow tier
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Compute Engine's times (20-60 s boots, seconds-long group operations, the 30 s spot notice), scaled
# by LOCALCLOUD_SCALE so the tier fits CI.
GCE_SCALE ?= 0.25
test-gce: venv ## The gce tier (seed batch, lifecycle faults) under Google's timings: LOCALCLOUD_PROFILE=gce
	@LOCALCLOUD_PROFILE=gce LOCALCLOUD_SCALE=$(GCE_SCALE) $(PY) -m pytest -m gce -p no:cacheprovider --no-cov $(PYTEST_ARGS)

lint: venv ## ruff check, ruff format --check, mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

format: venv ## Apply ruff's fixes and formatting
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

bench: venv ## Every benchmark, one table (also written to bench-results/)
	@$(PY) -m bench

faults: venv ## The whole fault-injection suite (full run counts) and its figures table
	@rm -f bench-results/faults.jsonl
	@SINERGYM_FAULTS_FULL=1 $(PY) -m pytest tests/faults -p no:cacheprovider --no-cov $(PYTEST_ARGS)
	@$(PY) scripts/faults_table.py

# A seeded soak: SEED replays a run (default: a random seed, printed first), MINUTES its length,
# EXPERIMENTS caps how many experiments it submits (default: rounds until the time is up).
MINUTES ?= 10
soak: venv ## Many faults at once for MINUTES (10) with invariants checked all along; SEED=n replays a run
	@$(PY) -m tests.soak --minutes $(MINUTES) $(if $(SEED),--seed $(SEED)) $(if $(EXPERIMENTS),--experiments $(EXPERIMENTS))

clean: local-down ## Remove the local cloud's state, caches and test outputs (keeps .venv)
	@rm -rf .local .pytest_cache .mypy_cache .ruff_cache .coverage coverage.json htmlcov bench-results reports soak-results
