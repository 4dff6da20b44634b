"""Test settings plus tests/safeddl_fixture, a makemigrations-written migration on a big table (migrate subprocesses)."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.safeddl_fixture"]  # noqa: F405
