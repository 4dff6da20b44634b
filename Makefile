# Two commands do all set-up on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run serve worker test test-sqlite test-postgres lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Development server on 127.0.0.1:8000 with the admin, after migrating and loading demo data, and a
# queue worker beside it (stopped with the server: the trap sends it SIGTERM, it finishes its job).
run: export SONGSGEN_GENERATOR ?= songs.demo_activity.DemoGenerator
run: venv
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate
	DEBUG=$${DEBUG:-1} $(PY) manage.py bootstrap_dev
	DEBUG=$${DEBUG:-1} $(PY) manage.py runworker & worker=$$!; \
	trap 'trap - EXIT INT TERM; kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	DEBUG=$${DEBUG:-1} $(PY) manage.py runserver 127.0.0.1:8000

lint: venv
	$(VENV)/bin/ruff check .
	SECRET_KEY=lint-only $(PY) manage.py makemigrations --check --dry-run
	tmp=$$(mktemp -d) && SECRET_KEY=lint-only SONGSGEN_DATA_DIR=$$tmp $(PY) manage.py migrate --check-safety; \
	rc=$$?; rm -rf $$tmp; exit $$rc

# A queue worker alone (make run starts one beside the server).
worker: venv
	DEBUG=$${DEBUG:-1} $(PY) manage.py runworker

test-sqlite: venv
	$(VENV)/bin/pytest

# The whole suite again on a real PostgreSQL server that the run starts itself. Without the
# binaries the leg is skipped with a message, except under CI=true, where that fails.
test-postgres: venv
	@$(PY) -m tests.pgserver -- $(VENV)/bin/pytest; rc=$$?; \
	if [ $$rc -eq 3 ]; then \
	  if [ "$$CI" = "true" ]; then echo "PostgreSQL leg FAILED: PostgreSQL 15 binaries are missing (CI=true)"; exit 1; fi; \
	  echo "PostgreSQL leg SKIPPED: PostgreSQL binaries not found (install postgresql-15)"; exit 0; \
	fi; exit $$rc

test: lint test-sqlite test-postgres

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
