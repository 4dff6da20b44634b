"""Test settings plus tests/nonatomic_fixture, whose non-atomic migrations fail half-way (for migrate subprocesses)."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.nonatomic_fixture"]  # noqa: F405
