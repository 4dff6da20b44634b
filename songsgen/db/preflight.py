"""Before a long-running writer (the worker) starts: is the database there, writable, migrated?

Checked without writing: connecting to a missing SQLite file would create it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.exceptions import DatabaseNotReady
from songsgen.db.history import shown_path, sqlite_file

MIGRATE = "Run `manage.py migrate` first."
SHOWN = 3  # migrations a message names before "and N more"


def _name(connection: BaseDatabaseWrapper) -> str:
    """The database as a message names it: the SQLite file as typed, or PostgreSQL name and host."""
    path = sqlite_file(connection) if connection.vendor == "sqlite" else None
    if path is not None:
        return shown_path(path)
    settings_dict = connection.settings_dict
    return f"{settings_dict.get('NAME')!r}" + (f" on {settings_dict['HOST']}" if settings_dict.get("HOST") else "")


def _check_sqlite_file(connection: BaseDatabaseWrapper) -> None:
    path = sqlite_file(connection)
    if path is None:
        return
    where = _name(connection)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        raise DatabaseNotReady(f"There is no database at {where} yet. {MIGRATE}")
    if not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseNotReady(
            f"The SQLite database {where} is read-only for this user, and a worker writes to it. Give the user "
            "running the worker write access to the file."
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise DatabaseNotReady(
            f"The folder of the SQLite database {where} is read-only for this user; SQLite writes its -wal and "
            "-shm files there. Give the user running the worker write access to the folder."
        )


def check_ready_for_writer(connection: BaseDatabaseWrapper, *, tables: Iterable[str]) -> list[str]:
    """Raise DatabaseNotReady (what is wrong, what to do) unless a writer can start here: the
    database exists, is writable, was migrated and holds `tables`. Returns the code's
    migrations not applied yet: not a refusal, as every release runs on the schema before its
    own migrations (docs/postgres.md)."""
    if connection.vendor == "sqlite":
        _check_sqlite_file(connection)
    executor = MigrationExecutor(connection)
    if not executor.loader.applied_migrations:
        raise DatabaseNotReady(f"The database {_name(connection)} has not been migrated: it has none of this "
                               f"project's tables. {MIGRATE}")
    with connection.cursor() as cursor:
        missing = sorted(set(tables) - set(connection.introspection.table_names(cursor)))
    if missing:
        raise DatabaseNotReady(f"The database {_name(connection)} lacks the table(s) {', '.join(missing)}: "
                               f"their migrations have not been applied. {MIGRATE}")
    return [f"{migration.app_label}.{migration.name}"
            for migration, _backwards in executor.migration_plan(executor.loader.graph.leaf_nodes())]


def pending_note(pending: list[str]) -> str:
    """The notice for migrations not applied yet, naming at most a few."""
    more = f" and {len(pending) - SHOWN} more" if len(pending) > SHOWN else ""
    return (f"Note: {len(pending)} migration(s) of this code are not applied yet ({', '.join(pending[:SHOWN])}"
            f"{more}); run `manage.py migrate` once the release is deployed.")
