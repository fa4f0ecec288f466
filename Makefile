# Two entry points (see README): `make train` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/quickstart.yaml

.PHONY: train test test-fast lint format install install-dev slurm-start slurm-alliance slurm-stop clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev,tracking,export,search]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

train: install  ## install, then train the quickstart config (CONFIG=... for another)
	$(BIN)/mnist-hpc train $(CONFIG)

# Two passes: everything but the Slurm sandbox and the notebooks on every core (pytest-xdist, whole
# files per worker so that a module's fixtures are made once; TEST_WORKERS=0 for one process), then
# the Slurm-sandbox tests and the notebooks in one process (one sandbox; jobs that race real time
# limits; notebooks that must run within their 10-minute budget on an otherwise idle machine).
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist loadfile

test: install-dev  ## install with the test extras, then run the whole test suite
	$(BIN)/python -m pytest -q --durations=15 $(XDIST) -m "not slurm and not notebook"
	$(BIN)/python -m pytest -q --durations=0 -m "slurm or notebook"

# the inner loop: no Slurm sandbox, no notebooks, no trainings on the real data, no minutes-long work
# (markers in pyproject.toml; tests/conftest.py marks every test using the real data `realdata`)
test-fast: install-dev
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow and not slurm and not notebook and not realdata"

lint: install-dev  ## ruff (lint + format check) over the tree, mypy over mnist_hpc/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-dev  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

slurm-start:  ## a one-node Slurm sandbox on this machine (root; installs slurm-wlm)
	scripts/local_slurm.sh start

slurm-alliance:  ## the same sandbox as an Alliance node: module, wheelhouse, $SLURM_TMPDIR, no network in jobs
	LOCAL_SLURM_ALLIANCE=1 scripts/local_slurm.sh start

slurm-stop:
	scripts/local_slurm.sh stop

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
