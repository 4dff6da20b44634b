"""What a database error means to an operator: one line saying what is wrong and what to do.

Returns None for anything else, which stays a traceback: an unknown error may be a bug.
"""

from __future__ import annotations

import sqlite3
import traceback
from pathlib import Path
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.history import shown_path

MIGRATE = "Run `manage.py migrate` first."
PG_ADVICE = (
    "Check the host, port, user, password and database name in DATABASE_URL, and that the server is running "
    "and accepts connections from here."
)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _driver_error(exc: BaseException) -> BaseException | None:
    """The sqlite3 or psycopg error behind `exc` (Django re-raises driver errors `from` them)."""
    if not isinstance(exc, DatabaseError | sqlite3.Error) and not _is_psycopg(exc):
        return None
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, sqlite3.Error) or _is_psycopg(candidate):
            return candidate
    return None


def _is_psycopg(error: BaseException | None) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a runtime dependency
        return False
    return isinstance(error, psycopg.Error)


def _settings_of(exc: BaseException) -> dict[str, Any]:
    """The settings of the connection that raised `exc`: its frames hold the
    DatabaseWrapper (or a cursor of it); the default database when none does (an error
    raised outside Django's connection)."""
    found = None
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        owner = frame.f_locals.get("self")
        owner = getattr(owner, "db", owner)  # a CursorWrapper names its connection `db`
        if isinstance(owner, BaseDatabaseWrapper):
            found = owner
    return (found or connections[DEFAULT_DB_ALIAS]).settings_dict


def _sqlite_path(settings_dict: dict[str, Any]) -> str:
    """The SQLite file as a message names it."""
    name = str(settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or not str(settings_dict.get("ENGINE", "")).endswith("sqlite3"):
        return "The SQLite database"
    return shown_path(Path(name.removeprefix("file:").split("?")[0]))


def _explain_sqlite(error: sqlite3.Error, settings_dict: dict[str, Any]) -> str | None:
    path = _sqlite_path(settings_dict)
    # the primary code of an extended one
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    text = _first_line(error)
    if code == sqlite3.SQLITE_NOTADB:
        return (f"{path} is not an SQLite database ({text}). Point DATABASE_URL (or SONGSGEN_DATA_DIR) at the "
                "right file, or move this one aside and run `manage.py migrate` to create a new database.")
    if code == sqlite3.SQLITE_READONLY:
        return (f"{path} is read-only for this user ({text}). Give the user running this command write access "
                "to the file and to its folder (SQLite writes its -wal and -shm files beside it).")
    if code == sqlite3.SQLITE_CANTOPEN:
        return (f"{path} cannot be opened ({text}). Check that its folder exists and that this user may read "
                "and write the folder and the file.")
    if text.startswith("no such table: "):
        return f"A table is missing in {path} ({text}): the database has not been migrated. {MIGRATE}"
    return None


def _pg_where(settings_dict: dict[str, Any]) -> str:
    if "postgresql" not in str(settings_dict.get("ENGINE", "")):
        return "PostgreSQL"
    host = settings_dict.get("HOST") or "the local socket"
    port = settings_dict.get("PORT") or 5432
    return f"the PostgreSQL database {settings_dict.get('NAME')!r} on {host}:{port}"


def _explain_postgres(error: BaseException, settings_dict: dict[str, Any]) -> str | None:
    import psycopg

    where = _pg_where(settings_dict)
    state = getattr(error, "sqlstate", None) or ""
    # No SQLSTATE: the client gave up (host unknown, connection refused, timeout); 08: connection
    # exception; 28: the login was refused; 3D000: no such database.
    if isinstance(error, psycopg.OperationalError) and (not state or state[:2] in ("08", "28") or state == "3D000"):
        return f"Cannot connect to {where}: {_first_line(error)}. {PG_ADVICE}"
    if state == "42P01":  # undefined_table
        return f"A table is missing in {where} ({_first_line(error)}): the database has not been migrated. {MIGRATE}"
    return None


def explain(exc: BaseException) -> str | None:
    """One line for a database error an operator can fix (what is wrong, what to do), or None."""
    driver = _driver_error(exc)
    if driver is None:
        return None
    settings_dict = _settings_of(exc)
    if isinstance(driver, sqlite3.Error):
        return _explain_sqlite(driver, settings_dict)
    return _explain_postgres(driver, settings_dict)
