"""What both runs share: Django's tests/test_sqlite.py, with the engine a parameter."""

from __future__ import annotations

from typing import Any


def databases(engine: str) -> dict[str, dict[str, Any]]:
    """Django's runtests needs 'default' and 'other' (in-memory, as Django's own test_sqlite.py has them)."""
    return {"default": {"ENGINE": engine}, "other": {"ENGINE": engine}}


DATABASES = databases("django.db.backends.sqlite3")
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
# Django's runner, each test's outcome written to $DJANGO_SUITE_RESULTS as JSON (tests/django_suite/recorder.py).
TEST_RUNNER = "tests.django_suite.recorder.RecordingRunner"
