"""Test settings plus tests/rehearse_fixture, whose data migrations reach `default` every usual way (for migrate
subprocesses only)."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.rehearse_fixture"]  # noqa: F405
