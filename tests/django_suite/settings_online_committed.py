"""Our schema editor, never atomic, every rebuild online: each step commits, as in a live migrate."""

from tests.django_suite.settings_common import *  # noqa: F403
from tests.django_suite.settings_common import databases

DATABASES = databases("tests.django_suite.nonatomic")
SUITE_SCHEMA_EDITOR = "online"
ONLINE_REBUILD_MIN_ROWS = 0
ONLINE_REBUILD_WAL_BACKLOG_MB = 256
