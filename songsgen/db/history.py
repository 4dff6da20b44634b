"""Guard rails: migrate leaves another application's database alone; newer backups are refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from django.apps import apps
from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.loader import MigrationLoader

SHOWN = 5  # names a message lists before "and N more"
ADVICE = (
    "Nothing was changed. Point DATABASE_URL at the right database, or run with --adopt to add "
    "this project's tables to it."
)


def _loader() -> MigrationLoader:
    """The migrations on disk and their graph, read without a database."""
    return MigrationLoader(None, ignore_no_migrations=True)


def project_apps(loader: MigrationLoader | None = None) -> set[str]:
    """Labels of this project's own apps with migrations: code under BASE_DIR, not dependencies'."""
    base = Path(settings.BASE_DIR).resolve()
    ours = set()
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        if path.is_relative_to(base) and not path.is_relative_to(base / ".venv"):
            ours.add(config.label)
    return ours & (loader or _loader()).migrated_apps


def _names(items: Iterable[str]) -> str:
    """`a, b, c`: at most SHOWN of them, then how many more, so a message stays readable."""
    listed = sorted(items)
    shown = ", ".join(listed[:SHOWN])
    return shown + (f" and {len(listed) - SHOWN} more" if len(listed) > SHOWN else "")


# --- a foreign database -----------------------------------------------------------------------


def sqlite_file(connection: BaseDatabaseWrapper) -> Path | None:
    """The SQLite file of the connection, or None for an in-memory database."""
    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or "mode=memory" in name:
        return None
    return Path(name.removeprefix("file:").split("?")[0])


def shown_path(path: Path) -> str:
    """The path as a person would type it here: relative to the working folder when inside it."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _sqlite_contents(path: Path) -> tuple[set[str], set[str] | None]:
    """(tables, apps django_migrations records or None), through a read-only connection."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )}
        if "django_migrations" not in tables:
            return tables, None
        recorded = conn.execute("SELECT DISTINCT app FROM django_migrations").fetchall()
        return tables, {row[0] for row in recorded}
    finally:
        conn.close()


def _server_contents(connection: BaseDatabaseWrapper) -> tuple[set[str], set[str] | None]:
    """(tables, apps django_migrations records or None), through Django's connection, reading."""
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        if "django_migrations" not in tables:
            return tables, None
        cursor.execute("SELECT DISTINCT app FROM django_migrations")
        return tables, {row[0] for row in cursor.fetchall()}


def _where(connection: BaseDatabaseWrapper) -> str:
    """The database as a message names it."""
    name, host = connection.settings_dict.get("NAME"), connection.settings_dict.get("HOST")
    return f"{connection.vendor} database {name!r}" + (f" on {host}" if host else "")


def foreign_database(connection: BaseDatabaseWrapper) -> str | None:
    """Why the database looks like another application's (one line), or None if ours or empty.

    Ours: no tables at all, or a django_migrations table recording one of this project's apps (or
    an empty one alone). Nothing is written, not even SQLite's switch to WAL.
    """
    if connection.vendor == "sqlite":
        path = sqlite_file(connection)
        if path is None or not path.exists() or path.stat().st_size == 0:
            return None  # a new database: nothing there to harm
        where = shown_path(path)
        try:
            tables, recorded = _sqlite_contents(path)
        except sqlite3.DatabaseError as exc:
            return (f"{where} is not a readable SQLite database ({exc}). Nothing was changed. "
                    "Point DATABASE_URL at the right database.")
    else:
        where = _where(connection)
        tables, recorded = _server_contents(connection)
    if not tables or (recorded == set() and tables == {"django_migrations"}):
        return None
    ours = project_apps()
    if recorded and recorded & ours:
        return None
    held = f"{where} holds {len(tables)} table(s) ({_names(tables)})"
    if recorded is None:
        return (f"{held} but no migration history of this project: it looks like another "
                f"application's database. {ADVICE}")
    return (f"{held} and the migration history of {_names(recorded) or 'no app'} but none of this "
            f"project's apps ({_names(ours)}): it looks like another Django project's database. "
            f"{ADVICE}")


# --- a backup's migration history ---------------------------------------------------------------


@dataclass
class HistoryGap:
    """How a recorded migration history differs from the code's migrations."""

    ahead: list[str] = field(default_factory=list)  # recorded, of this project's apps, unknown here
    behind: list[str] = field(default_factory=list)  # the code's, unrecorded: migrate applies them


def history_gap(recorded: Iterable[tuple[str, str]]) -> HistoryGap:
    """Compare django_migrations rows (app, name) with the migrations on disk."""
    loader = _loader()
    applied = set(recorded)
    ours = project_apps(loader)
    unknown = [key for key in applied if key[0] in ours and key not in loader.disk_migrations]
    behind: list[str] = []
    seen: set[tuple[str, str]] = set()
    for leaf in sorted(loader.graph.leaf_nodes()):
        for key in loader.graph.forwards_plan(leaf):  # dependencies first, as migrate goes
            if key in seen:
                continue
            seen.add(key)
            replaces = [tuple(r) for r in loader.graph.nodes[key].replaces]
            if key not in applied and not (replaces and all(r in applied for r in replaces)):
                behind.append(f"{key[0]}.{key[1]}")
    return HistoryGap(sorted(f"{app}.{name}" for app, name in unknown), behind)


def newer_release(ahead: list[str]) -> str:
    """The refusal of a backup whose history is ahead of the code."""
    return (f"this backup was made by a newer release: migrations {_names(ahead)} unknown here; "
            "restore it with that release, or pick an older backup")


def pending_note(behind: list[str]) -> str:
    """What to run after restoring a backup whose history is behind the code."""
    return (f"this backup predates the code: `manage.py migrate` will now apply {len(behind)} "
            f"migration(s): {', '.join(behind)}")
