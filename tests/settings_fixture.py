"""Test settings plus the failure-injection app tests/migrations_fixture (for migrate subprocesses only)."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.migrations_fixture"]  # noqa: F405
