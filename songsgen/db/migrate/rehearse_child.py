"""The rehearsal's own process: `main([_, PLAN_JSON, RESULT_FILE, NAME])` in a Python started by rehearse.py.

`DATABASES` is replaced by the scratch copy before Django is set up, so no alias names the live
database; the process ends when its parent's pipe closes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from songsgen.db.problems import ERROR, Problem

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from songsgen.db.migrate.apply import Applier

DATABASE_ENV = "SONGSGEN_REHEARSAL_DATABASE"


@dataclass
class RehearsedStep:
    """One migration as it ran on the scratch copy."""

    migration: str  # "app.0002_name"
    seconds: float
    lock_seconds: float
    # "songs_song: AccessExclusiveLock"; SQLite: "database write lock"
    locks: list[str] = field(default_factory=list)
    rows: int = 0
    error: str | None = None
    # the grouped transaction it ran in; None: non-atomic, its own transactions
    transaction: int | None = None
    online: list[str] = field(default_factory=list)  # tables it rebuilt online (SQLite), with their figures


@dataclass
class Rehearsal:
    """The whole rehearsal: each step, the time it all took, and what verification found."""

    steps: list[RehearsedStep]
    seconds: float
    verification: list[Problem]
    ok: bool
    longest_lock_seconds: float = 0.0  # the prediction of the live report's figure of the same name

    def as_dict(self) -> dict[str, Any]:
        """The rehearsal as JSON (migrate's report), each verification problem in its own shape."""
        return {**asdict(self), "verification": [p.as_dict() for p in self.verification]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rehearsal:
        """The rehearsal back from `as_dict`'s JSON, as the child process hands it over."""
        problems = [Problem(str(p["check"]), str(p["subject"]), str(p["detail"]), p["severity"] == ERROR,
                            str(p.get("fix", "")), str(p.get("source", "")), tuple(p.get("agreed", ())))
                    for p in data["verification"]]
        return cls(steps=[RehearsedStep(**step) for step in data["steps"]], seconds=float(data["seconds"]),
                   verification=problems, ok=bool(data["ok"]),
                   longest_lock_seconds=float(data.get("longest_lock_seconds", 0.0)))


def _end_with_parent() -> None:
    """Exit when the parent's end of stdin closes: a SIGKILLed migrate leaves no rehearsal."""

    def watch() -> None:
        # the raw descriptor: no buffer lock left held at interpreter shutdown
        while os.read(0, 4096):
            pass
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def apply_plan(scratch: BaseDatabaseWrapper, plan_keys: list[tuple[str, str, bool]],
               log: Callable[[str], None]) -> Rehearsal:
    """Apply the plan to `scratch` as the live migrate would, and report each migration."""
    from django.db.migrations.executor import MigrationExecutor
    from django.db.migrations.migration import Migration

    from songsgen.db.migrate import observe, pglocks, schema
    from songsgen.db.migrate.apply import Applier
    from songsgen.db.migrate.online.plan import online_migrations, threshold
    from songsgen.db.migrate.online.rebuild import Stats
    from songsgen.db.migrate.safeddl.editor import SafeForm
    from songsgen.db.migrate.verify import tables_changed_by

    clock = time.monotonic()
    if scratch.vendor == "postgresql":
        pglocks.hurry_autovacuum(scratch)  # as the live session (pglocks.limit_waits) does
    applier = Applier(scratch)
    error: str | None = None
    verification: list[Problem] = []

    def progress(action: str, migration: Migration | None = None, fake: bool | None = False, /) -> None:
        if action in ("apply_start", "unapply_start") and migration is not None:
            applier.start(migration, backwards=action == "unapply_start")  # as the live command
        elif action in ("apply_success", "unapply_success"):
            applier.finish()
            done = applier.applied[-1]
            log(f"  {done['migration']}: {done['seconds']:.3f} s, {done['rows']} row(s)")

    executor = MigrationExecutor(scratch, progress)
    plan = [(executor.loader.graph.nodes[(app, migration)], backwards) for app, migration, backwards in plan_keys]
    # as migrate.run: only SQLite defers its foreign-key check to the commit
    state = schema.applied_state(executor)
    if scratch.vendor == "sqlite":
        applier.tables_of = tables_changed_by(plan, state)
    applier.online = online_migrations(scratch, plan, state, threshold(scratch))[0]  # as the live run goes online
    online: dict[str, list[str]] = {}

    def rebuilt(stats: Stats | SafeForm) -> None:
        online.setdefault(applier.current or "", []).append(
            f"{stats.table}: {stats.rows:,} rows, {stats.chunks} chunk(s), longest lock "
            f"{stats.longest_lock_seconds:.3f} s, {stats.seconds:.1f} s" if isinstance(stats, Stats) else
            f"{stats.table}: {stats.kind} in its safe form ({len(stats.ran)} statement(s)), {stats.seconds:.1f} s")
    # as migrate: before a drop commits
    applier.verify_group = lambda labels: _verified_group(scratch, plan, labels)
    with applier.metered(rows=True), observe.listening(rebuilt):
        try:
            executor.migrate([(app, migration) for app, migration, _ in plan_keys], plan=plan)
        except Exception as exc:  # the migration failed on the copy: report it
            failed = applier.current is not None
            applier.finish()  # its time, rows and lock are reported too
            applier.rollback(exc)
            error = f"{type(exc).__name__}: {exc}"
            if not failed:
                applier.applied.append({"migration": "(plan)", "seconds": 0.0, "transaction": None})
        else:
            verification = _verify_and_commit(scratch, plan, applier, str(scratch.settings_dict["NAME"]))
    applier.measure()
    steps = [RehearsedStep(e["migration"], e["seconds"], e.get("lock_seconds", 0.0), e.get("locks", []),
                           e.get("rows", 0), None, e["transaction"], online.get(e["migration"], []))
             for e in applier.applied]
    if error is not None:
        steps[-1].error = error
    ok = error is None and not any(p.blocking for p in verification)
    return Rehearsal(steps=steps, seconds=time.monotonic() - clock, verification=verification, ok=ok,
                     longest_lock_seconds=max((step.lock_seconds for step in steps), default=0.0))


def _verified_group(scratch: BaseDatabaseWrapper, plan: list, labels: list[str]) -> set[str] | None:
    """The open group that drops a table or column, verified before its commit as live."""
    from songsgen.db.exceptions import VerificationFailed
    from songsgen.db.migrate.verify import part, verify

    problems, tables = verify(scratch, part(plan, labels), pages=False)
    errors = [p for p in problems if p.blocking]
    if errors:
        raise VerificationFailed(f"{len(errors)} problem(s), first: {errors[0]}")
    return tables


def _verify_and_commit(scratch: BaseDatabaseWrapper, plan: list, applier: Applier, name: str) -> list[Problem]:
    """As migrate's apply step: verify inside the open transaction, commit it (SQLite: the
    foreign-key check of what verification left), then SQLite's page check outside the
    lock; the problems found."""
    from songsgen.db.migrate.verify import after_commit_problems, in_transaction, verify

    try:
        problems, tables = verify(scratch, in_transaction(plan, applier), pages=False)
        if any(p.blocking for p in problems):
            applier.rollback(RuntimeError("verification failed"))
            return problems
        applier.commit(keys_checked=tables)
        if scratch.vendor == "sqlite":
            problems += after_commit_problems(scratch, plan, tables)
    except Exception as exc:  # noqa: BLE001
        # a check that cannot run, or the check at commit, is a failed check
        applier.rollback(exc)
        detail = f"{type(exc).__name__}: {exc}"
        return [Problem("verify", name, detail)]
    return problems


def main(argv: list[str]) -> int:
    """Set Django up on the scratch copy alone, apply the plan, write the result; the exit code."""
    _end_with_parent()
    plan_keys = [(str(app), str(name), bool(back)) for app, name, back in json.loads(argv[1])]
    result = Path(argv[2])
    scratch_settings = json.loads(os.environ.pop(DATABASE_ENV))

    import django
    from django.conf import settings

    settings.DATABASES = {"default": scratch_settings}  # before setup: no connection exists yet
    django.setup()
    from django.db import DEFAULT_DB_ALIAS, connections

    # the wrapper itself: the Applier patches its attributes
    connection = connections[DEFAULT_DB_ALIAS]

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        rehearsal = apply_plan(connection, plan_keys, log)
        payload: dict[str, object] = {"rehearsal": rehearsal.as_dict()}
    except Exception as exc:  # noqa: BLE001 — reported to the parent as one line
        first = (str(exc).strip().splitlines() or [""])[0]
        payload = {"error": f"{type(exc).__name__}: {first}".rstrip(": ")}
    finally:
        connection.close()
    result.write_text(json.dumps(payload))
    return 0

