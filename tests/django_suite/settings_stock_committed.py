"""Django's SQLite schema editor, never atomic: the reference for settings_online_committed."""

from tests.django_suite.settings_common import *  # noqa: F403
from tests.django_suite.settings_common import databases

DATABASES = databases("tests.django_suite.nonatomic")
SUITE_SCHEMA_EDITOR = "stock"
