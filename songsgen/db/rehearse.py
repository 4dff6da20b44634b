"""`migrate --rehearse`: apply the plan to a scratch copy of the pre-migrate snapshot and measure each migration.

`rehearse(connection, snapshot, plan_keys)` restores the snapshot into a scratch database (SQLite: a 0600 copy
beside the snapshot; PostgreSQL: a new database filled by pg_restore, then vacuumed and analyzed) and applies
the plan there the way the live migrate applies it: the same `Applier` (songsgen/db/apply.py) runs consecutive
atomic migrations in one transaction (on SQLite with the foreign-key check deferred to the commit, on the tables
the plan changes plus the small ones), verification runs inside the last transaction and SQLite's page check
after its commit; on PostgreSQL the session yields to autovacuum after 20 ms, as the live one does.
The scratch copy is always removed, on error and Ctrl-C too. The live database is only read for its
settings: it is never connected to.

Per migration it reports:
- `seconds`: wall time from the executor's start callback to its success callback.
- `lock_seconds` and `locks`: measured by songsgen/db/lockmeter.py, as the live migrate measures them. The
  longest a writer-blocking lock (SQLite: the database write lock; PostgreSQL: SHARE or stronger on a table
  that existed before) was held while the migration ran, counted to the end of its transaction. Migrations
  that share one transaction (`transaction`, the same number) each report that transaction's hold, the
  verification and the commit's foreign-key check included: that is how long a writer waits live.
- `rows`: rows it inserted, updated or deleted (django_migrations left out).
Django's post_migrate signal (content types, permissions: a few small writes) is not sent on the copy.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration

from songsgen.db import backup, pgdump, pglocks, schema
from songsgen.db.apply import Applier
from songsgen.db.exceptions import RehearsalError
from songsgen.db.problems import Problem

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

SCRATCH_PREFIX = "songsgen_rehearse_"


@dataclass
class RehearsedStep:
    """One migration as it ran on the scratch copy."""

    migration: str  # "app.0002_name"
    seconds: float
    lock_seconds: float
    locks: list[str] = field(default_factory=list)  # "songs_song: AccessExclusiveLock"; SQLite: "database write lock"
    rows: int = 0
    error: str | None = None
    transaction: int | None = None  # the grouped transaction it ran in; None: non-atomic, its own transactions


@dataclass
class Rehearsal:
    """The whole rehearsal: each step, the time it all took, and what verification found."""

    steps: list[RehearsedStep]
    seconds: float
    verification: list[Problem]
    ok: bool
    longest_lock_seconds: float = 0.0  # the prediction of the live report's figure of the same name

    def as_dict(self) -> dict[str, Any]:
        """The rehearsal as JSON (migrate's report), each verification problem in its own JSON shape."""
        return {**asdict(self), "verification": [p.as_dict() for p in self.verification]}


# --- the scratch database ---------------------------------------------------------------------------
@contextmanager
def _scratch_sqlite(snapshot: Path) -> Iterator[str]:
    """A private copy of the snapshot beside it, removed with its WAL files afterwards."""
    fd, name = tempfile.mkstemp(prefix=".rehearse-", suffix=".sqlite3", dir=snapshot.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out, open(snapshot, "rb") as source:
            shutil.copyfileobj(source, out, pgdump.CHUNK)
        yield name
    finally:
        backup.remove_file(Path(name))


def _maintenance_connection(settings_dict: dict[str, Any]) -> psycopg.Connection[TupleRow]:
    """An autocommit connection to a database other than the live one, for CREATE/DROP DATABASE."""
    import psycopg

    failure: Exception | None = None
    for dbname in ("postgres", "template1"):
        try:
            return psycopg.connect(**pgdump.connect_params(settings_dict, dbname), autocommit=True)
        except psycopg.OperationalError as exc:
            failure = exc
    raise RehearsalError(f"cannot connect to the server's maintenance database: {failure}")


@contextmanager
def _scratch_postgres(settings_dict: dict[str, Any], snapshot: Path) -> Iterator[str]:
    """A new database with the live one's encoding and locale, filled from the archive; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"{SCRATCH_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    admin = _maintenance_connection(settings_dict)
    try:
        row = admin.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            [settings_dict["NAME"]],
        ).fetchone()
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if row:
            create += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(*map(sql.Literal, row))
        try:
            admin.execute(create)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise RehearsalError(
                f"the role {settings_dict.get('USER') or '(default)'} may not create databases, and a rehearsal "
                "needs a scratch database: grant it with ALTER ROLE … CREATEDB, or migrate without --rehearse."
            ) from exc
        try:
            try:
                pgdump.restore({**settings_dict, "NAME": name}, snapshot)
            except pgdump.PgDumpError as exc:
                raise RehearsalError(f"restoring the snapshot into the scratch database failed: {exc}") from exc
            _settle({**settings_dict, "NAME": name})
            yield name
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


def _settle(settings_dict: dict[str, Any]) -> None:
    """VACUUM (ANALYZE) the freshly restored copy, so it looks like a live database autovacuum keeps up with.

    Otherwise autovacuum starts on every table just loaded and a migration's DDL queues behind it, and the
    first scans set every row's hint bits: both would be counted as lock time the live run does not have."""
    import psycopg

    with psycopg.connect(**pgdump.connect_params(settings_dict), autocommit=True) as scratch:
        scratch.execute("VACUUM (ANALYZE)")


@contextmanager
def _alias(settings_dict: dict[str, Any], name: str) -> Iterator[BaseDatabaseWrapper]:
    """A Django connection to the scratch database under a temporary alias, closed and forgotten afterwards."""
    alias = f"rehearse_{os.getpid()}_{secrets.token_hex(4)}"
    connections.settings[alias] = {**settings_dict, "NAME": name}
    try:
        scratch = connections[alias]
        try:
            yield scratch
        finally:
            scratch.close()
            del connections[alias]
    finally:
        del connections.settings[alias]


# --- the rehearsal ----------------------------------------------------------------------------------
def rehearse(
    connection: BaseDatabaseWrapper,
    snapshot: Path,
    plan_keys: list[tuple[str, str, bool]],
    *,
    log: Callable[[str], None] = lambda s: None,
) -> Rehearsal:
    """Apply the plan to a scratch copy of `snapshot` as the live migrate would, and report each migration."""
    from songsgen.db.migrate import tables_changed_by  # migrate imports this module

    clock = time.monotonic()
    if connection.vendor == "sqlite":
        scratch_db = _scratch_sqlite(snapshot)
    elif connection.vendor == "postgresql":
        scratch_db = _scratch_postgres(connection.settings_dict, snapshot)
    else:
        raise RehearsalError(f"no rehearsal for a {connection.vendor} database")
    error: str | None = None
    verification: list[Problem] = []
    with scratch_db as name, _alias(connection.settings_dict, name) as scratch:
        log(f"Rehearsing {len(plan_keys)} migration(s) on a scratch copy of {snapshot.name} ({name}) ...")
        if scratch.vendor == "postgresql":
            pglocks.hurry_autovacuum(scratch)  # as the live session (pglocks.limit_waits) does
        applier = Applier(scratch)

        def progress(action: str, migration: Migration | None = None, fake: bool | None = False, /) -> None:
            if action in ("apply_start", "unapply_start") and migration is not None:
                applier.start(migration)
            elif action in ("apply_success", "unapply_success"):
                applier.finish()
                done = applier.applied[-1]
                log(f"  {done['migration']}: {done['seconds']:.3f} s, {done['rows']} row(s)")

        executor = MigrationExecutor(scratch, progress)
        plan = [(executor.loader.graph.nodes[(app, migration)], backwards) for app, migration, backwards in plan_keys]
        if scratch.vendor == "sqlite":  # as migrate.run: only SQLite defers its foreign-key check to the commit
            applier.tables_of = tables_changed_by(plan, schema.applied_state(executor))
        with applier.metered(rows=True):
            try:
                executor.migrate([(app, migration) for app, migration, _ in plan_keys], plan=plan)
            except BaseException as exc:  # the migration failed on the copy: report it; Ctrl-C propagates
                failed = applier.current is not None
                applier.finish()  # its time, rows and lock are reported too
                applier.rollback(exc)
                if not isinstance(exc, Exception):
                    raise
                error = f"{type(exc).__name__}: {exc}"
                if not failed:
                    applier.applied.append({"migration": "(plan)", "seconds": 0.0, "transaction": None})
            else:
                verification = _verify_and_commit(scratch, plan, applier, name)
        applier.measure()
    steps = [RehearsedStep(e["migration"], e["seconds"], e.get("lock_seconds", 0.0), e.get("locks", []),
                           e.get("rows", 0), None, e["transaction"]) for e in applier.applied]
    if error is not None:
        steps[-1].error = error
    ok = error is None and not any(p.blocking for p in verification)
    return Rehearsal(steps=steps, seconds=time.monotonic() - clock, verification=verification, ok=ok,
                     longest_lock_seconds=max((step.lock_seconds for step in steps), default=0.0))


def _verify_and_commit(scratch: BaseDatabaseWrapper, plan: list, applier: Applier, name: str) -> list[Problem]:
    """As migrate's apply step: verify inside the open transaction, commit it (SQLite: the foreign-key check of
    what verification left), then SQLite's page check outside the lock; the problems found."""
    from songsgen.db.migrate import after_commit_problems, in_transaction, verify

    try:
        problems, tables = verify(scratch, in_transaction(plan, applier), pages=False)
        if any(p.blocking for p in problems):
            applier.rollback(RuntimeError("verification failed"))
            return problems
        applier.commit(keys_checked=tables)
        if scratch.vendor == "sqlite":
            problems += after_commit_problems(scratch, plan, tables)
    except Exception as exc:  # noqa: BLE001 — a check that cannot run, or the check at commit, is a failed check
        applier.rollback(exc)
        detail = f"{type(exc).__name__}: {exc}"
        return [Problem("verify", name, detail)]
    return problems


def format_report(rehearsal: Rehearsal) -> list[str]:
    """The rehearsal as a table a person reads before deciding to migrate the live database."""
    rows = [("migration", "time", "lock held", "rows", "locks")]
    for step in rehearsal.steps:
        locks = ", ".join(step.locks) or "-"
        rows.append((step.migration, f"{step.seconds:.3f} s", f"{step.lock_seconds:.3f} s", str(step.rows), locks))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
             for row in rows]
    groups: dict[int, list[RehearsedStep]] = {}
    for step in rehearsal.steps:
        if step.transaction is not None:
            groups.setdefault(step.transaction, []).append(step)
    for group in groups.values():
        if len(group) > 1:
            lines.append(f"One transaction, as the live migrate runs them: {', '.join(s.migration for s in group)} "
                         f"(writers wait up to {max(s.lock_seconds for s in group):.3f} s).")
    lines += [f"FAILED {step.migration}: {step.error}" for step in rehearsal.steps if step.error]
    lines += [p.line() for p in rehearsal.verification]
    verdict = "ok" if rehearsal.ok else "FAILED"
    lines.append(f"Rehearsal {verdict} in {rehearsal.seconds:.2f} s on a scratch copy; the live database is untouched.")
    return lines
