# One entry point for users and CI. `make test` must work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Pins every Python package (torch to the CPU build that is on disk here).
CONSTRAINTS := constraints.txt
# Extra pytest arguments: make test PYTEST_ARGS="-k storage -x"
PYTEST_ARGS ?=

.PHONY: venv test demo lint bench clean postgres browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The suite starts its own throwaway PostgreSQL (tests/pgcluster.py) and a local Ray cluster;
# ensure-postgres.sh and ensure-chromium.sh install Debian's packages if missing. The REQUIRE
# variables make a missing server or browser a failure, never a silent skip.
test: venv postgres browser
	PARETOTUNE_REQUIRE_POSTGRES=1 PARETOTUNE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

postgres:
	bash scripts/ensure-postgres.sh

# Headless Chromium for the report test (Debian's package, through apt-get when missing).
browser:
	bash scripts/ensure-chromium.sh

lint: venv
	$(BIN)/ruff check paretotune tests
	$(BIN)/mypy

demo: venv
	$(BIN)/paretotune run examples/digits.yaml

clean:
	rm -rf $(VENV) .pytest_cache paretotune.db paretotune.db-* .paretotune-cache

# Benchmarks (docs/benchmarks-search.md): quick modes of the three search benchmarks, a few
# minutes; `make bench FULL=1` runs the full versions (about 40 minutes on 2 cores).
bench: venv
	$(BIN)/python benchmarks/sampler_efficiency.py $(if $(FULL),,--quick)
	$(BIN)/python benchmarks/repeatability.py $(if $(FULL),,--quick)
	$(BIN)/python benchmarks/minilm_study.py $(if $(FULL),,--quick)
