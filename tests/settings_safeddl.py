"""Test settings plus tests/safeddl_fixture: a migration as makemigrations writes it, on a big table."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.safeddl_fixture"]  # noqa: F405
