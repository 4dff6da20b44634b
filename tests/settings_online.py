"""Test settings plus tests/online_fixture, whose migrations rebuild a table with rows (for migrate subprocesses)."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.online_fixture"]  # noqa: F405
