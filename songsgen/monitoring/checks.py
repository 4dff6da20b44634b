"""django-health-check plugins for the database machinery.

Each failure names what is wrong and what to do, never "unknown error".
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from typing import ClassVar

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.recorder import MigrationRecorder
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from songsgen.db import diagnose, history
from songsgen.db.exceptions import BackupError
from songsgen.db.replicas import read_connection
from songsgen.monitoring import probes

SHOWN = 3  # names a message lists before "and N more"
# the write probe gives up on the write lock after this long (a check has 5 s)
WRITE_WAIT_SECONDS = 2
MiB = 2**20


def names(items: list[str]) -> str:
    """`a, b, c and N more`: a message stays one readable line."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


# A duration is shown in the largest unit it has two of (90 s, 5 min, 30 h, 3 d):
# never "0.0 h" for 40 s.
UNITS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def _amount(value: float, extra: int = 0) -> str:
    """Three significant digits (more by `extra`), no trailing zeros: 36, 2.5, 0.004, 259,200."""
    if value == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(value)))) + extra
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if decimals else text


def duration(seconds: float, *, beside: float | None = None) -> str:
    """`seconds` in the unit fitting its size; beside a limit, same unit, digits to differ."""
    name, scale = next(((n, s) for n, s in UNITS if abs(seconds) >= 2 * s), UNITS[-1])
    text = _amount(seconds / scale)
    if beside is not None and beside != seconds and duration(beside).endswith(f" {name}"):
        for extra in range(1, 4):  # 26.04 h over a limit of 26 h is not "26 h (limit 26 h)"
            if text != _amount(beside / scale):
                break
            text = _amount(seconds / scale, extra)
    return f"{text} {name}"


@dataclasses.dataclass(repr=False)
class SongsgenCheck(HealthCheck):
    """A check of one database alias; its `name` is how /health lists it."""

    alias: str = "default"
    name: ClassVar[str] = ""
    reads_replica: ClassVar[bool] = False  # read-only counts: a usable read replica may answer (not the primary)

    def __repr__(self) -> str:
        return self.name

    def run(self) -> None:
        connection = connections[self.alias]
        try:
            if self.reads_replica:
                connection = read_connection(connection)
            self.check(connection)
        except (DatabaseError, sqlite3.Error) as exc:
            raise ServiceUnavailable(diagnose.explain(exc) or _first_line(exc)) from exc
        except (OSError, BackupError) as exc:
            raise ServiceUnavailable(_first_line(exc)) from exc

    def check(self, connection: BaseDatabaseWrapper) -> None:
        """Raise ServiceUnavailable saying what is wrong."""
        raise NotImplementedError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class DatabaseCheck(SongsgenCheck):
    """Reachable and writable: a write that rolls back (the write lock taken, a row rewritten)."""

    name = "database"

    def check(self, connection: BaseDatabaseWrapper) -> None:
        connection.ensure_connection()
        table = connection.ops.quote_name(MigrationRecorder.Migration._meta.db_table)
        sqlite = connection.vendor == "sqlite"
        previous = None
        with connection.cursor() as cursor:
            # a long writer (a migrate) holds the write lock: say so instead of waiting 10 s
            if sqlite:
                previous = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
                cursor.execute(f"PRAGMA busy_timeout = {WRITE_WAIT_SECONDS * 1000}")
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                if not sqlite:
                    cursor.execute(f"SET LOCAL lock_timeout = '{WRITE_WAIT_SECONDS}s'")
                    cursor.execute(f"SET LOCAL statement_timeout = '{WRITE_WAIT_SECONDS * 2}s'")
                cursor.execute(f"UPDATE {table} SET app = app WHERE id = (SELECT MIN(id) FROM {table})")
                transaction.set_rollback(True, using=connection.alias)
        except DatabaseError as exc:
            if "locked" in str(exc) or "lock timeout" in str(exc):
                raise ServiceUnavailable(f"no write within {duration(WRITE_WAIT_SECONDS)}: another transaction holds "
                                         "the write lock (a migrate or a restore?)") from exc
            raise
        finally:
            if previous is not None:
                with connection.cursor() as cursor:
                    cursor.execute(f"PRAGMA busy_timeout = {int(previous)}")


class MigrationsCheck(SongsgenCheck):
    """The database's migration history matches the code: nothing unapplied, nothing unknown."""

    name = "migrations"

    def check(self, connection: BaseDatabaseWrapper) -> None:
        gap = history.history_gap(MigrationRecorder(connection).applied_migrations())
        if gap.behind:
            raise ServiceUnavailable(f"{len(gap.behind)} migration(s) not applied: {names(gap.behind)}. "
                                     "Run `manage.py migrate` (docs/migrations.md).")
        if gap.ahead:
            raise ServiceUnavailable(f"the database has migrations this code does not know: {names(gap.ahead)} "
                                     "(a newer release migrated it). Deploy that release again.")


class MigrateCheck(SongsgenCheck):
    """No migrate died half-way: its crash marker is left and nobody holds the migrate lock."""

    name = "migrate"

    def check(self, connection: BaseDatabaseWrapper) -> None:
        state = probes.migrate_state(connection)
        if state.state == probes.INTERRUPTED:
            raise ServiceUnavailable(f"{state.describe()} was interrupted. Run `manage.py migrate`: it carries on "
                                     "if the dead run committed nothing, else it says to roll back with "
                                     "--resume-restore (docs/migrations.md).")


class BackupCheck(SongsgenCheck):
    """The newest backup is younger than HEALTH_BACKUP_MAX_AGE_HOURS (0: not checked)."""

    name = "backup"

    def check(self, connection: BaseDatabaseWrapper) -> None:
        limit = float(settings.HEALTH_BACKUP_MAX_AGE_HOURS)
        if not limit:
            return
        found = probes.backups(connection)
        if found.newest is None:
            raise ServiceUnavailable("no backup of this database yet. Schedule `manage.py dbbackup --clean` "
                                     "(docs/backups.md).")
        age, most = found.age_seconds or 0.0, limit * 3600
        if age > most:
            raise ServiceUnavailable(f"the newest backup, {found.newest.name}, is {duration(age, beside=most)} old "
                                     f"(limit {duration(most)}). Check the dbbackup cron job (docs/backups.md).")


class ReplicationCheck(SongsgenCheck):
    """The replica is at most HEALTH_REPLICATION_MAX_LAG_SECONDS behind (or not configured)."""

    name = "replication"

    def __repr__(self) -> str:
        # Once checked, the label follows what the check found (as /metrics reports it):
        # `replicate` running counts as configured even without SONGSGEN_REPLICA_URL.
        configured = self.__dict__.get("_configured")
        if configured is None:
            configured = probes.replication_configured()
        return "replication" if configured else "replication (not configured)"

    def check(self, connection: BaseDatabaseWrapper) -> None:
        status = probes.replication(connection)
        self._configured = status.configured
        if not status.configured:
            return
        if status.problem or status.lag_seconds is None:
            raise ServiceUnavailable(status.problem or "the replica's position is unknown")
        limit = float(settings.HEALTH_REPLICATION_MAX_LAG_SECONDS)
        if status.lag_seconds > limit:
            raise ServiceUnavailable(f"the replica is {duration(status.lag_seconds, beside=limit)} behind "
                                     f"(limit {duration(limit)}).")


class DiskCheck(SongsgenCheck):
    """The backup folder has room for the next backup (size x factor + margin, as migrate needs)."""

    name = "disk"

    def check(self, connection: BaseDatabaseWrapper) -> None:
        room = probes.backup_room(connection)
        if not room.enough:
            raise ServiceUnavailable(
                f"{room.free / MiB:,.0f} MiB free in the backup folder; the next backup needs about "
                f"{room.needed / MiB:,.0f} MiB. Free space or point SONGSGEN_BACKUP_DIR at a bigger disk."
            )
