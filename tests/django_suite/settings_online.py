"""Django's test settings with our SQLite backend, every rebuild and index build taken the online way."""

from tests.django_suite.settings_common import *  # noqa: F403
from tests.django_suite.settings_common import databases

DATABASES = databases("songsgen.db.migrate.sqlite3")
ONLINE_REBUILD_MIN_ROWS = 0  # every table counts as big: each rebuild goes through songsgen/db/migrate/online
ONLINE_REBUILD_WAL_BACKLOG_MB = 256
