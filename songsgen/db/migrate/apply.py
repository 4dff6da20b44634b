"""Applying a plan on a live database so that a failure never costs another connection's commit.

Atomic migrations share one transaction that rolls back; what a run committed is undone
by reverse operations, never by a file copied back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from songsgen.db.exceptions import UndoFailed
from songsgen.db.migrate import partial, schema
from songsgen.db.migrate.lockmeter import LockMeter, metered
from songsgen.db.migrate.partial import Progress

Key = tuple[str, str]
# seconds: longer than the 100 ms a waiting SQLite writer sleeps between its tries
WRITERS_TURN = 0.15


def label(key: Key) -> str:
    return f"{key[0]}.{key[1]}"


@dataclass
class Applier:
    """Filled and steered by the migrate command's progress callback while the executor runs."""

    connection: BaseDatabaseWrapper
    group: bool = True  # run consecutive atomic migrations in one transaction
    current: str | None = None
    started: float = 0.0
    applied: list[dict[str, Any]] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)  # what this run committed, in order
    # the longest one of our grouped transactions held the write lock, in seconds
    longest_lock: float = 0.0
    # The tables the named migrations change (None: any table); unset: every table is checked.
    tables_of: Callable[[list[str]], set[str] | None] | None = None
    meter: LockMeter | None = None  # measures each migration's write lock while `metered` runs
    transactions: int = 0  # grouped transactions opened so far
    _measured: LockMeter | None = None  # the meter of the last `metered` run, read by `measure`
    # Verifies the open group before its commit (the migrations' labels); set when
    # the group drops data.
    verify_group: Callable[[list[str]], set[str] | None] | None = None
    # each operation of a non-atomic migration, as it runs
    on_progress: Callable[[Progress], None] | None = None
    # operations an earlier run left applied: skipped once found done
    resume: Progress | None = None
    # the non-atomic migration under way, operation by operation
    interrupted: Progress | None = None
    log: Callable[[str], None] | None = None
    # SQLite: the migrations whose rebuilds run online (label -> tables), applied operation by operation
    online: dict[str, list[str]] = field(default_factory=dict)
    # Called with the migrations each commit made durable (the migrate's wait for read replicas to replay them).
    after_commit: Callable[[list[str]], None] | None = None
    _tracker: partial.Tracker | None = None
    _atomic: transaction.Atomic | None = None
    _opened: float = 0.0
    _in_group: list[str] = field(default_factory=list)
    _group_drops: bool = False

    @property
    def in_transaction(self) -> bool:
        return self._atomic is not None

    @property
    def grouped(self) -> list[str]:
        """The migrations the open transaction holds (labels), in order."""
        return list(self._in_group)

    def start(self, migration: Migration, backwards: bool = False) -> None:
        """Before a migration: join (or open) the group if it is atomic, else commit the group
        first and track the migration's operations one by one."""
        fresh = True
        name = f"{migration.app_label}.{migration.name}"
        if name in self.online:
            migration.atomic = False  # type: ignore[misc]  # its online rebuild commits chunk by chunk
        if migration.atomic and self.group and self.connection.features.can_rollback_ddl:
            if self._atomic is None:
                self._writers_turn()
                self._open()
            else:
                fresh = False
            self._group_drops |= any(_drops_anything(op, backwards) for op in migration.operations)
        else:
            if self._atomic is not None and self._group_drops and self.verify_group is not None:
                # before the drop commits
                self.commit(keys_checked=self.verify_group(list(self._in_group)))
            else:
                self.commit()
            self._writers_turn()
            resume = self.resume if self.resume is not None and self.resume.migration == name else None
            skip = resume.done if resume is not None and resume.backwards == backwards else 0
            self.interrupted = Progress(name, backwards)
            self._tracker = partial.Tracker(self.connection, migration, self.interrupted, skip, self.on_progress,
                                            self.log)
        self.current, self.started = name, time.monotonic()
        if self.meter is not None:
            self.meter.begin_step(fresh)

    def finish(self) -> None:
        """After a migration: record its time; outside a group it is already committed."""
        if self.current is None:
            return
        seconds = time.monotonic() - self.started
        entry: dict[str, Any] = {"migration": self.current, "seconds": round(seconds, 6),
                                 "transaction": self.transactions if self._atomic is not None else None}
        if self.meter is not None:
            rows = self.meter.end_step()
            if self.meter.count_rows:
                entry["rows"] = rows
        self.applied.append(entry)
        self._untrack()
        self.interrupted = None
        if self._atomic is None:
            # Non-atomic: it committed as it went, in transactions of its own
            # (the meter times those).
            self.committed.append(self.current)
            if self.after_commit is not None:
                self.after_commit([self.current])
        else:
            self._in_group.append(self.current)
        self.current = None

    def _untrack(self) -> None:
        if self._tracker is not None:
            self._tracker.remove()
            self._tracker = None

    def _writers_turn(self) -> None:
        """SQLite, between two of our transactions: let in the writers queued behind the last one.

        A writer waiting on the lock retries every 100 ms once it has waited 0.3 s
        (SQLite's busy handler); taking the lock again at once, the next migration would
        make it wait through both."""
        if self.connection.vendor == "sqlite" and self.applied:
            time.sleep(WRITERS_TURN)

    def _open(self) -> None:
        if self.connection.vendor == "sqlite":
            if not self.connection.disable_constraint_checking():
                raise RuntimeError("could not switch SQLite foreign-key enforcement off before the transaction")
            # Django's SQLite schema editor checks every foreign key of the database after each
            # migration (8 s at 1M songs, all under the write lock); in a group that check runs
            # once, at commit.
            self.connection.check_constraints = _deferred  # type: ignore[method-assign]
        atomic = transaction.atomic(using=self.connection.alias)
        atomic.__enter__()  # BEGIN IMMEDIATE on SQLite (settings): the write lock is ours from here
        self._atomic, self._opened = atomic, time.monotonic()
        self.transactions += 1

    def commit(self, keys_checked: AbstractSet[str] | None = frozenset()) -> None:
        """Commit the open group, after the foreign-key check on SQLite of what `keys_checked`
        (the tables the caller already checked; None: all) leaves."""
        if self._atomic is None:
            return
        # A failure leaves the group open: the caller's `rollback` undoes it and names what it held.
        if self.connection.vendor == "sqlite":
            self._restore_check()
            tables = self._fk_tables()
            if keys_checked is not None and (tables is None or set(tables) - keys_checked):
                remaining = None if tables is None else sorted(set(tables) - keys_checked)
                # PRAGMA foreign_key_check; raises IntegrityError
                self.connection.check_constraints(table_names=remaining)
        atomic, self._atomic = self._atomic, None
        try:
            atomic.__exit__(None, None, None)
        finally:
            self._closed()
        self.committed.extend(self._in_group)
        group, self._in_group, self._group_drops = self._in_group, [], False
        if self.after_commit is not None:
            self.after_commit(group)

    def rollback(self, exc: BaseException) -> list[str]:
        """Roll the open group back; return the migrations it undid."""
        self._untrack()
        if self._atomic is None:
            return []
        atomic, self._atomic = self._atomic, None
        undone, self._in_group, self._group_drops = self._in_group, [], False
        try:
            atomic.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:  # noqa: BLE001 — a broken connection: closing it rolls back on the server
            self.connection.close()
        finally:
            self._closed()
        return undone

    def _closed(self) -> None:
        self.longest_lock = max(self.longest_lock, time.monotonic() - self._opened)
        if self.connection.vendor == "sqlite":
            self._restore_check()
            if self.connection.connection is not None:
                self.connection.enable_constraint_checking()

    def _restore_check(self) -> None:
        self.connection.__dict__.pop("check_constraints", None)

    def _fk_tables(self) -> list[str] | None:
        """The tables whose foreign keys the group may have broken: None (all) unless its
        migrations' operations name their tables. Only this transaction wrote with enforcement
        off, so beside its tables only the small ones need a look (post_migrate fills content
        types and permissions) — not a 1M-row table a later non-atomic migration of the plan
        backfills in transactions of its own."""
        changed = None if self.tables_of is None else self.tables_of(self._in_group)
        if changed is None:
            return None
        from songsgen.db.migrate.safety.check import big_table_rows
        from songsgen.db.rowcounts import table_rows_at_least

        names = self.connection.introspection.django_table_names(only_existing=True, include_views=False)
        limit = big_table_rows()
        return sorted(t for t in names if t in changed or not table_rows_at_least(self.connection, t, limit))

    def reset(self) -> None:
        """Forget the timings of a failed attempt before a retry (what it committed stays; the
        operations a non-atomic migration completed are skipped when it runs again)."""
        self.current, self.applied = None, []
        if self.interrupted is not None and self.interrupted.done:
            self.resume, self.interrupted = self.interrupted, None

    @contextmanager
    def metered(self, *, rows: bool = False) -> Iterator[LockMeter]:
        """Measure each migration's write lock (`songsgen.db.migrate.lockmeter`) while the body runs."""
        with metered(self.connection, rows=rows) as meter:
            self.meter = meter
            try:
                yield meter
            finally:
                self.meter = None
                self._measured = meter

    @property
    def longest_hold(self) -> float:
        """The longest writers waited on this run: a grouped transaction, or one migration's
        measured lock (a non-atomic index build holds SQLite's write lock for its one statement,
        outside any group)."""
        return round(max([self.longest_lock, *(e.get("lock_seconds", 0.0) for e in self.applied)]), 6)

    def measure(self) -> None:
        """Write each applied migration's `lock_seconds` and `locks` into its entry, once its
        transaction ended (a hold still open counts up to now)."""
        if self._measured is None:
            return
        for entry, (seconds, locks) in zip(self.applied, self._measured.measured(), strict=False):
            entry.update(lock_seconds=round(seconds, 6), locks=locks)


def _deferred(table_names: list[str] | None = None) -> None:
    """Stands in for the connection's foreign-key check while a group is open."""


@dataclass
class Undo:
    unapplied: list[str] = field(default_factory=list)
    reapplied: list[str] = field(default_factory=list)
    # operations of a half-applied migration, reversed
    reversed: list[str] = field(default_factory=list)
    stays: list[str] = field(default_factory=list)  # what could not be undone, with why
    dropped: list[str] = field(default_factory=list)  # tables and columns dropped for good
    left: Progress | None = None  # the unrecorded migration whose first operations stay applied
    # code that was running outside a transaction: what it wrote is not undone
    unfinished: str | None = None

    def parts(self, rolled_back: list[str]) -> list[str]:
        """What was undone, for the report, with the migrations the transaction's rollback undid."""
        parts = [f"the transaction was rolled back ({', '.join(rolled_back)})"] if rolled_back else []
        if self.reversed:
            parts.append(f"the operations a non-atomic migration completed were reversed, last first "
                         f"({'; '.join(self.reversed)})")
        if self.unapplied:
            parts.append(f"{', '.join(self.unapplied)} unapplied by reverse operations")
        if self.reapplied:
            parts.append(f"{', '.join(self.reapplied)} re-applied")
        return parts


def _undoable(keys: list[Key], executor: MigrationExecutor, backwards: bool, state: ProjectState, undo: Undo
              ) -> list[Key]:
    """The first of `keys` (undo order) up to one whose undo cannot bring back what it dropped."""
    for n, key in enumerate(keys):
        lost = partial.migration_drops(executor.loader.graph.nodes[key], backwards, state)
        if lost:
            undo.dropped += lost
            undo.stays += [f"{label(key)}: its reverse cannot bring back the data it dropped ({', '.join(lost)})"]
            undo.stays += [f"{label(k)}: " + ("unapplied, comes after it" if backwards else "applied before it")
                           for k in keys[n + 1:]]
            return keys[:n]
    return keys


def undo_run(connection: BaseDatabaseWrapper, before: set[Key], log: Callable[[str], None],
             interrupted: Progress | None = None, on_change: Callable[[Progress], None] | None = None) -> Undo:
    """Bring the database back to `before` with Django's own reverse operations, last first: the
    operations the `interrupted` non-atomic migration completed, then what was added is
    unapplied and what was removed re-applied. Rows other connections wrote are untouched. Stops
    before an operation that is irreversible or dropped data that existed before (a table or
    column would come back empty): `stays` says what is left."""
    executor = MigrationExecutor(connection)
    state = schema.applied_state(executor, before)  # the migrations applied before the run
    done = Undo()
    try:
        if interrupted is not None and interrupted.started:
            reversal = partial.reverse(connection, interrupted, state, log, on_change)
            done.reversed, done.stays, done.dropped, done.left, done.unfinished = (
                reversal.reversed, reversal.stays, reversal.dropped, reversal.left, reversal.unfinished)
        executor = MigrationExecutor(connection)
        loader = executor.loader
        now = {key for key in loader.applied_migrations if key in loader.graph.nodes}
        order = [(m.app_label, m.name) for m, _ in executor.migration_plan(loader.graph.leaf_nodes(), clean_start=True)]
        added = [key for key in reversed(order) if key in now and key not in before]
        removed = [key for key in order if key in before and key not in now]
        if done.stays:
            done.stays += [f"{label(k)}: applied before it" for k in added]
            return done
        added = _undoable(added, executor, False, state, done)
        if added:
            log("Unapplying, by their reverse operations, the migrations this run committed: "
                + ", ".join(label(k) for k in added))
            executor.migrate([], plan=_online_as_applied(connection, [(loader.graph.nodes[key], True) for key in added],
                                                         state))
            done.unapplied = [label(k) for k in added]
        if removed and not done.stays:
            executor = MigrationExecutor(connection)
            removed = _undoable(removed, executor, True, state, done)
        if removed:
            log("Re-applying the migrations this run unapplied: " + ", ".join(label(k) for k in removed))
            executor.migrate([], plan=_online_as_applied(
                connection, [(executor.loader.graph.nodes[key], False) for key in removed], state))
            done.reapplied = [label(k) for k in removed]
    except UndoFailed:
        raise
    except Exception as exc:  # the reverse itself failed
        raise UndoFailed(f"{type(exc).__name__}: {exc}") from exc
    return done


def _online_as_applied(connection: BaseDatabaseWrapper, plan: list[tuple[Migration, bool]], state: ProjectState
                       ) -> list[tuple[Migration, bool]]:
    """An undo's plan, whose migrations that change a big table run online, operation by operation, as the
    live run applied them: an undo must not hold the write lock for a whole rebuild either."""
    from songsgen.db.migrate.online.plan import undo_atomic

    for migration, _backwards in plan:
        if not undo_atomic(connection, migration, state):
            migration.atomic = False  # type: ignore[misc]
    return plan


def _drops_anything(op: Operation, backwards: bool) -> bool:
    """Whether running `op` that way drops a table or column: its group is verified first."""
    return bool(partial.drops_kind(op, backwards))
