"""Django's test settings (its tests/test_sqlite.py) with its stock SQLite backend: the reference run."""

from tests.django_suite.settings_common import *  # noqa: F403
