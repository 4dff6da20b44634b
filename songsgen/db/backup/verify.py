"""Is this SQLite file a sound songsgen database? The checks before a restore, and backupcheck's."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from songsgen.db import history
from songsgen.db.atomicfile import remove_file, remove_stale_temp_files, temp_path
from songsgen.db.backup.codec import unpack
from songsgen.db.exceptions import BackupError
from songsgen.db.problems import Problem, summary


def check_errors(path: Path, *, quick: bool = False) -> list[Problem]:
    """`PRAGMA integrity_check` (or quick_check) of a database file: empty when it is sound."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return check_connection(conn, quick=quick, subject=str(path))
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [Problem("quick_check" if quick else "integrity_check", str(path), str(exc))]


def check_connection(conn: sqlite3.Connection, *, quick: bool = False, subject: str = "database") -> list[Problem]:
    """`PRAGMA integrity_check` (or quick_check) of what `conn` sees: empty when it is sound."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.DatabaseError as exc:
        return [Problem(pragma, subject, str(exc))]
    messages = [str(row[0]) for row in rows]
    return [] if messages == ["ok"] else [Problem(pragma, subject, message) for message in messages]


def project_migration_roots() -> dict[str, set[str]]:
    """For each of the project's own apps (not Django's or third parties'), its first migrations."""
    from django.db.migrations.loader import MigrationLoader

    ours = history.project_apps()
    loader = MigrationLoader(None, ignore_no_migrations=True, load=False)
    loader.load_disk()
    roots: dict[str, set[str]] = {}
    for (app, name), migration in loader.disk_migrations.items():
        if app in ours and not any(dep[0] == app for dep in migration.dependencies):
            roots.setdefault(app, set()).add(name)
    return roots


def recorded_migrations(path: Path) -> set[tuple[str, str]] | None:
    """The (app, name) rows of django_migrations in the SQLite file at `path`; None without one."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'django_migrations'"
        if conn.execute(query).fetchone() is None:
            return None
        return set(conn.execute("SELECT app, name FROM django_migrations").fetchall())
    finally:
        conn.close()


def songsgen_errors(path: Path) -> list[Problem]:
    """Why the SQLite file at `path` is not a songsgen database this code runs (empty if it is)."""
    try:
        recorded = recorded_migrations(path)
    except sqlite3.DatabaseError as exc:
        return [Problem("history", str(path), str(exc))]
    if recorded is None:
        return [Problem("history", str(path), "it has no django_migrations table: not a Django database")]
    missing = [
        f"{app}.{name}" for app, names in sorted(project_migration_roots().items()) for name in sorted(names)
        if (app, name) not in recorded
    ]
    if missing:
        return [Problem("history", str(path), f"its django_migrations table lacks this project's migrations "
                        f"({', '.join(missing)}): a backup of another Django project?")]
    if ahead := history.history_gap(recorded).ahead:
        return [Problem("history", str(path), history.newer_release(ahead))]
    return []


def row_counts(path: Path) -> dict[str, int]:
    """Rows per table of the database at `path`."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
                for t in tables}
    finally:
        conn.close()


def schema(path: Path) -> list[tuple[str, str, str]]:
    """The tables, indexes and triggers of the database at `path`, with their SQL."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    finally:
        conn.close()


def page_size(path: Path) -> int:
    """The page size of the database at `path`: a WAL database cannot change it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def readable(path: Path) -> None:
    """Raise BackupError unless `path` opens as an SQLite database; leave it rollback-journal."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:  # a copy of a WAL database would otherwise grow a -wal file beside it
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"it is not a readable SQLite database ({exc})") from exc


def sound(path: Path) -> None:
    """Raise BackupError unless `path` passes PRAGMA integrity_check."""
    if errors := check_errors(path):
        raise BackupError(f"it fails PRAGMA integrity_check: {summary(errors)}")


def songsgen(path: Path) -> None:
    """Raise BackupError unless `path` is a songsgen database whose history is not ahead of ours."""
    if errors := songsgen_errors(path):
        raise BackupError(errors[0].detail)


def check_candidate(path: Path) -> None:
    """Raise BackupError unless `path` is a sound songsgen database."""
    readable(path)
    sound(path)
    songsgen(path)


@dataclass
class BackupReport:
    """What `backupcheck` found in one backup."""

    name: str
    size: int  # bytes, as stored
    database_size: int  # bytes, unpacked
    created: datetime | None
    age_seconds: float | None
    format: str
    tables: dict[str, int]
    ok: bool
    errors: list[Problem]  # in JSON: `problems` (each Problem.as_dict()), and `errors` (each its detail)

    def as_dict(self) -> dict[str, Any]:
        return {
            "report_format": 2, "name": self.name, "ok": self.ok, "errors": [p.detail for p in self.errors],
            "problems": [p.as_dict() for p in self.errors], "size": self.size,
            "database_size": self.database_size, "format": self.format,
            "created": self.created.isoformat() if self.created else None, "age_seconds": self.age_seconds,
            "tables": self.tables,
        }


def check_backup(stream: IO[bytes], name: str, size: int, folder: Path, created: datetime | None) -> BackupReport:
    """Unpack a backup into a temporary file in `folder`, check it, and count its rows."""
    remove_stale_temp_files(folder)
    candidate = temp_path(folder, ".sqlite3")
    age = (datetime.now(UTC) - created).total_seconds() if created else None
    fmt, tables, db_size = "", {}, 0
    errors: list[Problem] = []
    try:
        fmt = unpack(stream, candidate)
        db_size = candidate.stat().st_size
        check_candidate(candidate)
        tables = row_counts(candidate)
    except BackupError as exc:
        errors = [Problem("backup", name, str(exc))]
    finally:
        remove_file(candidate)
    return BackupReport(name, size, db_size, created, age, fmt, tables, not errors, errors)
