"""The project's settings, with a SECRET_KEY for the test run and HTTPS redirects off.

Everything else (database, data folder, debug) still comes from the environment, so the same
suite runs on SQLite and, with DATABASE_URL, on PostgreSQL.
"""

import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-never-used-outside-the-test-suite")
# The test client and the live server speak plain HTTP.
os.environ.setdefault("SONGSGEN_SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SONGSGEN_SECURE_COOKIES", "0")

from songsgen.settings import *  # noqa: E402,F403

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A real file, never Django's in-memory test database: WAL, locking and other processes
    # only exist for files. One file per test run, so two runs on one machine never collide.
    _live = Path(DATABASES["default"]["NAME"])  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(_live.with_name(f"test_{_live.stem}_{os.getpid()}.db"))}  # noqa: F405

# Opted out explicitly: Django creates the test database with call_command("migrate", run_syncdb=True), and
# the tests' own call_command("migrate", ...) steer migrations directly. Tests of the safe path run it typed,
# in a subprocess (whose own settings keep the default), or pass safe=True.
MIGRATE_SAFE_BY_DEFAULT = False

# A test-only app with every column type the cross-database transfer must carry (tests/db/move/test_transfer.py).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.db.transfer_fixtures.apps.TransferFixturesConfig"]  # noqa: F405

# No collectstatic before the suite: plain names, and WhiteNoise finds the files in the apps as runserver does
# (tests/e2e/test_production.py runs collectstatic and the production storage in a real gunicorn).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
