"""Test settings plus tests/unsafe_fixture, whose one migration is deliberately unsafe (for migrate subprocesses)."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.unsafe_fixture"]  # noqa: F405
