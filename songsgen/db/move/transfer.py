"""Copy every table from one database to another (SQLite ⇄ PostgreSQL), then prove the copy.

Each step refuses before anything is written when it cannot go on; `resume` continues a kill.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.core.management.color import no_style
from django.db import DatabaseError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import DatabaseBusy, DatabaseUnavailable, DependencyCycle, TransferError
from songsgen.db.move.compare import Comparison, TableComparison, TableDigest, compare_connections, count_rows
from songsgen.db.move.external import identity, mask_url, open_database
from songsgen.db.move.tables import MIGRATIONS_TABLE, Table, dependency_order, existing_tables
from songsgen.db.move.transfer_background import Background
from songsgen.db.move.transfer_copy import bulk_session, copy_batches
from songsgen.db.move.transfer_defer import defer, restore
from songsgen.progress import Progress, duration

DEFAULT_BATCH_SIZE = 5_000
PROGRESS_TABLE = "songsgen_transfer_progress"


@dataclass
class TransferResult:
    """What a transfer did and whether the copy was proven."""

    tables: list[tuple[str, int]]  # (table, rows in source) in copy order
    copied: int  # rows written by this run
    seconds: float
    comparison: Comparison | None  # None on a dry run
    resumed: bool
    notes: list[str]


# --- checks before anything is written
# ------------------------------------------------------------------


def _pending(connection: BaseDatabaseWrapper) -> tuple[set[tuple[str, str]], list[str]]:
    """(applied migrations, names of the code's migrations not applied)."""
    executor = MigrationExecutor(connection)
    applied = set(executor.recorder.applied_migrations())
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return applied, [f"{m.app_label}.{m.name}" for m, backwards in plan if not backwards]


def _short(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_migration_states(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, *, source_url: str, target_url: str
) -> None:
    """Both databases migrated to this code's state, one history; else a TransferError."""
    src_applied, src_pending = _pending(source)
    if src_pending:
        raise TransferError(
            f"The source database is not migrated to this code's state ({len(src_pending)} migrations not applied: "
            f"{_short(src_pending)}). Migrate it first (`DATABASE_URL={mask_url(source_url)} python manage.py "
            "migrate`), or run transferdb from the release that matches it."
        )
    dst_applied, dst_pending = _pending(target)
    if dst_pending:
        raise TransferError(
            f"The target database is at another migration state than the source ({len(dst_pending)} migrations "
            f"not applied: {_short(dst_pending)}). Migrate it first: "
            f"`DATABASE_URL={mask_url(target_url)} python manage.py migrate` (with the real password), then "
            "run transferdb again."
        )
    only_src = sorted(f"{a}.{n}" for a, n in src_applied - dst_applied)
    only_dst = sorted(f"{a}.{n}" for a, n in dst_applied - src_applied)
    if only_src or only_dst:
        raise TransferError(
            "Source and target have different migration histories "
            f"(only in source: {_short(only_src) or 'none'}; only in target: {_short(only_dst) or 'none'}). "
            "Bring both to the same release before transferring."
        )


def _has_rows(connection: BaseDatabaseWrapper, table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {connection.ops.quote_name(table)} LIMIT 1")
        return cursor.fetchone() is not None


# --- the progress table on the target
# ---------------------------------------------------------------------


def _read_progress(connection: BaseDatabaseWrapper) -> dict[str, tuple[str | None, int, bool, str]] | None:
    """{table: (last pk as text, rows copied, done, source)} of an interrupted transfer, or None."""
    if PROGRESS_TABLE not in existing_tables(connection):
        return None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT table_name, last_pk, copied, done, source FROM {PROGRESS_TABLE}")
        return {name: (last, int(copied), bool(done), source) for name, last, copied, done, source in cursor.fetchall()}


def _create_progress(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {PROGRESS_TABLE} (table_name varchar(255) PRIMARY KEY, last_pk text NULL, "
            "copied bigint NOT NULL, done boolean NOT NULL, source text NOT NULL)"
        )


def _record_progress(connection: Any, table: str, last_pk: Any, copied: int, done: bool, source: str) -> None:
    """Upsert a table's progress, on a Django connection or a
    psycopg one (transfer_copy.OrderedWriters)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {PROGRESS_TABLE} (table_name, last_pk, copied, done, source) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET last_pk = excluded.last_pk, copied = excluded.copied, "
            "done = excluded.done",
            [table, None if last_pk is None else str(last_pk), copied, done, source],
        )


def _drop_progress(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {PROGRESS_TABLE}")


# --- the transfer
# -----------------------------------------------------------------------------------------


class _Meter:
    """Rows per second and time left, reported after each batch."""

    def __init__(self, phase: str, total: int, report: Callable[[Progress], None] | None) -> None:
        self.phase, self.total, self.report = phase, total, report
        self.done = 0
        self.started = time.monotonic()

    def batch(self, table: str, table_done: int, table_total: int, rows: int) -> None:
        self.done += rows
        if self.report is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.report(Progress(self.phase, self.done, self.total, elapsed, table, table_done, table_total))


def _copy_table(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, table: Table, *, batch_size: int, after: Any,
    copied: int, total: int, source_label: str, meter: _Meter, whole: bool,
) -> tuple[int, TableDigest | None]:
    """Copy one table from `after` on, one transaction per batch recording how far it got; the
    rows written and, when `whole` (read from its start), the digest of the rows read if it was
    computed on the way."""

    def then(connection: Any, batch: list[tuple[Any, ...]], written: int) -> None:
        _record_progress(connection, table.name, batch[-1][0], copied + written, False, source_label)
        meter.batch(table.name, copied + written, total, len(batch))

    written, digest = copy_batches(source, target, table, batch_size=batch_size, after=after, want_digest=whole,
                                   then=then)
    with transaction.atomic(using=target.alias):
        _record_progress(target, table.name, None, copied + written, True, source_label)
    return written, digest


def transfer(
    source_url: str, target_url: str, *, batch_size: int = DEFAULT_BATCH_SIZE, truncate: bool = False,
    resume: bool = False, dry_run: bool = False, report: Callable[[Progress], None] | None = None,
    on_table: Callable[[TableComparison], None] | None = None, lock_wait: float = 0.0,
) -> TransferResult:
    """Copy every table from `source_url` to `target_url`, then prove the copy equal."""
    started = time.monotonic()
    try:
        tables = dependency_order()
    except DependencyCycle as exc:
        raise TransferError(f"{exc} transferdb copies tables in dependency order and cannot split a cycle.") from exc
    try:
        with open_database(source_url, role="source") as source, open_database(target_url, role="target") as target:
            if identity(source) == identity(target):
                raise TransferError(
                    "The source and the target are the same database; give a different --to."
                )
            # The target's migrate lock: no migrate, restore or second transfer
            # changes it meanwhile.
            with nullcontext() if dry_run else database_lock(target.settings_dict, purpose="transferdb",
                                                             wait=lock_wait):
                return _run(
                    source, target, tables, source_url=source_url, target_url=target_url, batch_size=batch_size,
                    truncate=truncate, resume=resume, dry_run=dry_run, report=report, on_table=on_table,
                    started=started,
                )
    except (DatabaseUnavailable, DatabaseBusy) as exc:
        raise TransferError(str(exc)) from exc


def _run(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, tables: list[Table], *, source_url: str,
    target_url: str, batch_size: int, truncate: bool, resume: bool, dry_run: bool,
    report: Callable[[Progress], None] | None, on_table: Callable[[TableComparison], None] | None, started: float,
) -> TransferResult:
    check_migration_states(source, target, source_url=source_url, target_url=target_url)
    source_label = mask_url(source_url)
    progress = _read_progress(target)
    notes: list[str] = []
    if resume and truncate:
        raise TransferError("Give either --resume (continue) or --truncate (start over), not both.")
    if resume:
        if progress is None:
            raise TransferError(
                "Nothing to resume: the target records no interrupted transfer. Run without --resume."
            )
        sources = {entry[3] for entry in progress.values()}
        if sources and sources != {source_label}:
            raise TransferError(
                f"The interrupted transfer on the target came from {', '.join(sorted(sources))}, not {source_label}; "
                "resume it with that --from, or start over with --truncate."
            )
    elif progress is not None and not truncate:
        raise TransferError(
            "The target holds an interrupted transfer. Continue it with --resume, or start over with --truncate."
        )
    target_tables = existing_tables(target)
    if not resume:
        occupied = [t.name for t in tables if not t.migrate_created and t.name in target_tables
                    and _has_rows(target, t.name)]
        if occupied and not truncate:
            raise TransferError(
                f"The target already holds data in {_short(occupied)}. transferdb copies into an empty, migrated "
                "database; give --truncate to empty the target first (its data will be lost)."
            )
    counts = [(t, count_rows(source, t)) for t in tables]
    plan = [(t.name, n) for t, n in counts]
    if dry_run:
        notes.append("dry run: nothing was written")
        return TransferResult(plan, 0, time.monotonic() - started, None, resume, notes)

    background = Background(target, source)  # index rebuilds and target checksums beside the copy
    try:
        with bulk_session(source, target):
            copied, digests = _copy_all(
                source, target, counts, progress=progress if resume else None, truncate=truncate,
                batch_size=batch_size, source_label=source_label, report=report, background=background,
            )
            background.wait(target)
            _finish(target, tables)
        target_digests = background.target_digests()
    except DatabaseError as exc:
        raise TransferError(
            f"The copy stopped: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}. Batches "
            "committed so far are kept; fix the cause and rerun with --resume."
        ) from exc
    finally:
        background.close()

    done = sum(d.rows for d in digests.values()) + sum(d.rows for d in target_digests.values())
    verify = _Meter("verify", sum(n for _, n in counts) * 2 - done, report)
    comparison = compare_connections(
        source, target, tables, batch_size=batch_size, source_digests=digests, target_digests=target_digests,
        on_table=on_table, on_batch=lambda n: verify.batch("", 0, 0, n),
    )
    return TransferResult(plan, copied, time.monotonic() - started, comparison, resume, notes)


def _copy_all(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, counts: list[tuple[Table, int]], *,
    progress: dict[str, tuple[str | None, int, bool, str]] | None, truncate: bool, batch_size: int,
    source_label: str, report: Callable[[Progress], None] | None, background: Background,
) -> tuple[int, dict[str, TableDigest]]:
    """Replace migrate's rows, then copy the rest; rows written, the fully read tables' digests."""
    tables = [t for t, _ in counts]
    totals = {t.name: n for t, n in counts}
    if truncate:
        # The migration history stays: it is the target's migration state, already checked equal.
        flush = [t.name for t in tables if t.name != MIGRATIONS_TABLE]
        with transaction.atomic(using=target.alias):
            _drop_progress(target)
            target.ops.execute_sql_flush(target.ops.sql_flush(no_style(), flush, reset_sequences=True,
                                                              allow_cascade=True))
    digests: dict[str, TableDigest] = {}
    copied = 0
    first = [t for t in tables if t.migrate_created]
    rest = [t for t in tables if not t.migrate_created]
    remaining = 0
    for t in tables:
        _, done_rows, done, _ = (progress or {}).get(t.name, (None, 0, False, ""))
        remaining += 0 if done else max(totals[t.name] - done_rows, 0)
    meter = _Meter("copy", remaining, report)
    if progress is None:
        # One transaction: the target's own migrate-created rows give way to the source's.
        with transaction.atomic(using=target.alias):
            _create_progress(target)
            with target.cursor() as cursor:
                for table in reversed(first):
                    cursor.execute(f"DELETE FROM {target.ops.quote_name(table.name)}")
            for table in first:

                def then(connection: Any, batch: list[tuple[Any, ...]], done: int, name: str = table.name) -> None:
                    meter.batch(name, done, totals[name], len(batch))

                written, digest = copy_batches(
                    source, target, table, batch_size=batch_size, own_transactions=False, want_digest=True,
                    then=then,
                )
                _record_progress(target, table.name, None, written, True, source_label)
                if digest is not None:
                    digests[table.name] = digest
                copied += written
        progress = {}
    # empty tables on PostgreSQL: deferred before any background rebuild holds a lock
    for table in rest:
        last_text, _, done, _ = progress.get(table.name, (None, 0, False, ""))
        if not done and last_text is None:
            defer(target, table)
    for table in rest:
        last_text, done_rows, done, _ = progress.get(table.name, (None, 0, False, ""))
        if done:
            continue
        after = table.pk.to_python(last_text) if last_text is not None else None
        written, digest = _copy_table(
            source, target, table, batch_size=batch_size, after=after, copied=done_rows, total=totals[table.name],
            # only a table read from its start
            source_label=source_label, meter=meter, whole=after is None,
        )
        copied += written
        if digest is not None:
            digests[table.name] = digest
        if not background.table_copied(table, target):
            restore(target, table.name)
    return copied, digests


def _finish(target: BaseDatabaseWrapper, tables: Sequence[Table]) -> None:
    """Indexes and foreign keys left deferred come back; new rows get fresh ids; the planner
    learns the new sizes; the progress table goes."""
    with transaction.atomic(using=target.alias):
        restore(target)
        with target.cursor() as cursor:
            for sql in target.ops.sequence_reset_sql(no_style(), [t.model for t in tables]):
                cursor.execute(sql)
        _drop_progress(target)
    with target.cursor() as cursor:
        cursor.execute("ANALYZE")


def describe(progress: Progress) -> str:
    """One progress line: the table's share, the phase's speed, and time left overall."""
    eta = "?" if progress.eta is None else duration(progress.eta)
    if progress.phase == "verify":
        return f"verify: {progress.done:,}/{progress.total:,} rows read, {progress.rate:,.0f} rows/s, ETA {eta}"
    share = progress.table_done / progress.table_total if progress.table_total else 1.0
    return (
        f"{progress.table}: {progress.table_done:,}/{progress.table_total:,} rows ({share:.0%}) | "
        f"all tables {progress.done:,}/{progress.total:,}, {progress.rate:,.0f} rows/s, ETA {eta}"
    )
