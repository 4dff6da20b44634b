"""The switch from the replicating source to the target, with writes paused as briefly as possible.

A failure inside the pause resumes the source: it stays the truth.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.db import transaction

from songsgen.db.dblock import APPLICATION_PREFIX
from songsgen.db.exceptions import UpgradeError, UpgradeUnproven
from songsgen.db.move.compare import Comparison, compare_connections, has_integer_pk
from songsgen.db.move.external import open_database
from songsgen.db.move.pgupgrade import NAME, SWITCHED, Lag, Side, connect, lag, one, quote, url_params
from songsgen.db.move.tables import Table

PROBE = f"{NAME}_probe"  # PgBouncer's temporary entry for the login check


@dataclass(frozen=True)
class Bouncer:
    """The PgBouncer the application connects through: admin console, config file, db entry."""

    admin_url: str
    config: Path
    database: str
    # the application's (user, password); default: the admin console's
    login: tuple[str, str] | None = None

    def command(self, sql: str, conn: psycopg.Connection | None = None) -> None:
        """One admin console command (PAUSE db, RESUME db, RELOAD, RECONNECT db), on `conn`."""
        if conn is not None:
            conn.execute(sql)
            return
        with connect(self.admin_url, role="PgBouncer admin") as own:
            own.execute(sql)

    def check(self, target: Side) -> None:
        """The admin console answers, the config names the database, and PgBouncer can log in to
        the target: before anything is created."""
        self.command("SHOW VERSION")
        self._entry(self._read())
        self.can_reach(target)

    def _read(self) -> str:
        """The config, without a login check's entry a killed run may have left."""
        return re.sub(rf"^{PROBE}\s*=.*\n?", "", self.config.read_text(), flags=re.MULTILINE)

    def _entry(self, text: str) -> re.Match[str]:
        found = re.compile(rf"^(\s*{re.escape(self.database)}\s*=)(.*)$", re.MULTILINE).search(text)
        if found is None:
            raise UpgradeError(f"{self.config} has no [databases] entry {self.database}: name it with --pgbouncer-db.")
        return found

    def _line(self, found: re.Match[str], target: Side, name: str | None = None) -> str:
        """The entry's line pointing at the target (its other keys, such as user=, kept)."""
        keys = dict(pair.split("=", 1) for pair in found.group(2).split() if "=" in pair)
        keys.update(host=str(target.params.get("host", "")), port=str(target.params.get("port", 5432)),
                    dbname=target.dbname)
        head = found.group(1) if name is None else f"{name} ="
        return head + " " + " ".join(f"{k}={v}" for k, v in keys.items())

    def can_reach(self, target: Side) -> None:
        """Log in through PgBouncer to the target as the application would, via a temporary
        entry: a cutover to a server PgBouncer cannot log in to would leave every client waiting
        in its queue."""
        text = self._read()
        found = self._entry(text)
        self.config.write_text(text[:found.end()] + "\n" + self._line(found, target, PROBE) + text[found.end():])
        admin = url_params(self.admin_url)
        user, password = self.login or (admin.get("user", ""), admin.get("password", ""))
        try:
            self.command("RELOAD")
            with psycopg.connect(host=admin.get("host"), port=admin.get("port"), dbname=PROBE, user=user,
                                 password=password, connect_timeout=10, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UpgradeError(
                f"PgBouncer cannot log in to the target as {user}: {first}. Give the role the same password on the "
                "new server as on the old one (or fix PgBouncer's auth_file), then run again."
            ) from exc
        finally:
            self.config.write_text(text)
            self.command("RELOAD")

    def repoint(self, target: Side) -> str:
        """The [databases] entry rewritten to the target's host, port and database name (other
        keys kept); returns the config as it was, to put back should the cutover be abandoned."""
        text = self._read()
        found = self._entry(text)
        line = self._line(found, target)
        # in place: owner and mode kept
        self.config.write_text(text[:found.start()] + line + text[found.end():])
        return text


@dataclass
class Cutover:
    """What the cutover did: the pause, the lag before it, rows per table, the proof."""

    lag: Lag
    paused: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    comparison: Comparison | None = None
    mode: str = "pgbouncer"
    steps: dict[str, float] = field(default_factory=dict)  # seconds each step inside the pause took

    def step(self, name: str, since: float) -> float:
        """Record a step that started at `since`; returns now."""
        now = time.monotonic()
        self.steps[name] = now - since
        return now


class _Frozen:
    """Writes stopped on the source: PgBouncer paused, or the source read-only, sessions closed."""

    def __init__(self, source: psycopg.Connection, dbname: str, bouncer: Bouncer | None,
                 admin: psycopg.Connection | None, pauser: psycopg.Connection | None) -> None:
        self.source, self.dbname, self.bouncer, self.admin, self.pauser = source, dbname, bouncer, admin, pauser
        # the pauser is still blocked in PAUSE (never touched again: it holds its lock)
        self.stuck = False

    def close(self) -> None:
        if self.pauser is not None and not self.stuck:
            self.pauser.close()

    def freeze(self, timeout: float) -> None:
        """Stop writes; PgBouncer's PAUSE waits for transactions in flight, `timeout` s at most."""
        if self.bouncer is not None:
            self._pause(self.bouncer, timeout)
            return
        self.source.execute(f"ALTER DATABASE {quote(self.dbname)} SET default_transaction_read_only = on")
        self.source.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND application_name <> %s "
            # ours, and our migrate lock
            "AND application_name NOT LIKE %s", (NAME, f"{APPLICATION_PREFIX} %"),
        )

    def _pause(self, bouncer: Bouncer, timeout: float) -> None:
        # PAUSE blocks until every server connection is released and ignores a cancel
        # request, so it runs in a thread; if it is not done in time, RESUME from a new admin
        # session gives up the pause.
        failed: list[BaseException] = []
        done = threading.Event()

        def pause() -> None:
            try:
                bouncer.command(f"PAUSE {bouncer.database}", self.pauser)
            except BaseException as exc:  # handed to the waiting thread
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=pause, name="pgbouncer-pause", daemon=True).start()
        if not done.wait(timeout):
            self.stuck = True  # left to its daemon thread; the process's exit ends it
            bouncer.command(f"RESUME {bouncer.database}", self.admin)
            raise UpgradeError(
                f"PgBouncer could not pause {bouncer.database} within {timeout:g} s: a transaction through it stayed "
                "open. Writes went on; run again when no long transaction runs (or give a longer --pause-timeout)."
            )
        if failed:
            raise failed[0]

    def thaw(self, config: str | None) -> None:
        """Writes resume on the source (a failure in the pause); PgBouncer's config put back."""
        if self.bouncer is not None:
            if config is not None:
                self.bouncer.config.write_text(config)
                self.bouncer.command("RELOAD", self.admin)
                self.bouncer.command(f"RECONNECT {self.bouncer.database}", self.admin)
            self.bouncer.command(f"RESUME {self.bouncer.database}", self.admin)
        else:
            self.source.execute(f"ALTER DATABASE {quote(self.dbname)} RESET default_transaction_read_only")


def _await_marker(source: psycopg.Connection, target: psycopg.Connection, timeout: float) -> None:
    """A row written on the source now, seen on the target: all committed before is applied."""
    token = secrets.token_hex(8)
    source.execute("SET default_transaction_read_only = off")
    source.execute(f"INSERT INTO {NAME} (id, token) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET token = "
                   "excluded.token, at = now()", (token,))
    deadline = time.monotonic() + timeout
    while target.execute(f"SELECT 1 FROM {NAME} WHERE token = %s", (token,)).fetchone() is None:
        if time.monotonic() > deadline:
            raise UpgradeError(f"The target did not apply the source's last changes within {timeout:g} s.")
        time.sleep(0.002)


def _sync_sequences(source: psycopg.Connection, target: psycopg.Connection) -> None:
    """Every target sequence set to the source's last value: new ids follow the copied ones."""
    values = source.execute(
        "SELECT schemaname, sequencename, last_value FROM pg_sequences WHERE last_value IS NOT NULL "
        "AND schemaname = 'public'"
    ).fetchall()
    for schema, name, value in values:
        target.execute("SELECT setval(%s, %s, true)", (f"{quote(schema)}.{quote(name)}", value))


def _tally(conn: psycopg.Connection, tables: list[Table]) -> dict[str, tuple[Any, ...]]:
    """Per table: (rows, highest integer id or None), in one statement."""
    parts = []
    for t in tables:
        top = f"max({quote(t.pk.column)})" if has_integer_pk(t) else "NULL::bigint"
        parts.append(f"SELECT %s, count(*), {top} FROM {quote(t.name)}")
    rows = conn.execute(" UNION ALL ".join(parts), [t.name for t in tables]).fetchall()
    return {name: (count, top) for name, count, top in rows}


def _compare_tallies(source: psycopg.Connection, target: psycopg.Connection, tables: list[Table]) -> dict[str, int]:
    """Counts and highest ids on both servers at once (a connection each): pause of the slower."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        on_source = pool.submit(_tally, source, tables)
        after = _tally(target, tables)
        before = on_source.result()
    differ = [f"{n} (source {before[n][0]} rows, max id {before[n][1]}; target {after[n][0]}, {after[n][1]})"
              for n in before if before[n] != after[n]]
    if differ:
        raise UpgradeError("Row counts or highest ids differ: " + "; ".join(differ[:5]))
    return {n: int(v[0]) for n, v in before.items()}


@contextmanager
def _snapshot_connection(target: Side) -> Iterator[psycopg.Connection]:
    """A REPEATABLE READ transaction on the target, open during the block (snapshot exported)."""
    conn = psycopg.connect(**target.params)
    # psycopg begins it at the first statement
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def prove(source: Side, target: Side, tables: list[Table], snapshot: str,
          on_table: Callable[[Any], None] | None = None) -> Comparison:
    """dbcompare's counts and checksums: the source against the target read in `snapshot`."""
    with open_database(source.url, role="source") as src, open_database(target.url, role="target") as dst:
        with transaction.atomic(using=dst.alias), dst.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
            return compare_connections(src, dst, tables, on_table=on_table)


def cut_over(
    source: Side, target: Side, tables: list[Table], *, slot: str, bouncer: Bouncer | None, timeout: float,
    report: Callable[[str], None], on_table: Callable[[Any], None] | None = None,
    committed: Callable[[], None] = lambda: None,
) -> Cutover:
    """Pause, wait, sequences, counts, snapshot, repoint, resume; `committed()` once switched.

    Raises UpgradeUnproven when the proof finds the target differs (after the switch: both sides are kept)."""
    result = Cutover(lag=lag(source, slot), mode="pgbouncer" if bouncer else "read-only")
    report(f"cutover: {result.lag} before the pause")
    with ExitStack() as stack:  # every connection open before the pause: none is made inside it
        src = stack.enter_context(connect(source, role="source"))
        dst = stack.enter_context(connect(target, role="target"))
        admin = stack.enter_context(connect(bouncer.admin_url, role="PgBouncer admin")) if bouncer else None
        snap = stack.enter_context(_snapshot_connection(target))
        pauser = psycopg.connect(**url_params(bouncer.admin_url), autocommit=True) if bouncer else None
        frozen = _Frozen(src, source.dbname, bouncer, admin, pauser)
        stack.callback(frozen.close)
        started = time.monotonic()
        previous: str | None = None
        frozen.freeze(timeout)
        try:
            at = result.step("freeze", started)
            _await_marker(src, dst, timeout)
            at = result.step("caught up", at)
            _sync_sequences(src, dst)
            at = result.step("sequences", at)
            result.rows = _compare_tallies(src, dst, tables)
            at = result.step("counts", at)
            (snapshot,) = one(snap, "SELECT pg_export_snapshot()")
            at = result.step("snapshot", at)
            if bouncer is not None:
                previous = bouncer.repoint(target)
                for command in ("RELOAD", f"RECONNECT {bouncer.database}", f"RESUME {bouncer.database}"):
                    bouncer.command(command, admin)
                result.step("repoint", at)
            result.paused = time.monotonic() - started
        except BaseException as exc:
            frozen.thaw(previous)  # still inside the pause: the source goes on as before
            if isinstance(exc, UpgradeError | psycopg.Error):
                raise UpgradeError(f"Cutover abandoned, the source resumed and stays the truth: {exc}") from exc
            raise
        committed()
        # Should the proof fail or be interrupted, a later run must know the target is
        # live (never emptied).
        dst.execute(f"INSERT INTO {NAME} (id, token) VALUES ({SWITCHED}, 'switched') ON CONFLICT (id) DO NOTHING")
        steps = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in result.steps.items())
        report(f"cutover: writes paused {result.paused * 1000:.0f} ms ({steps} ms); proving the copy")
        result.comparison = prove(source, target, tables, snapshot, on_table)
    if not result.comparison.equal:
        raise UpgradeUnproven(
            "PROOF FAILED after the cutover: the target differs from the source in "
            + "; ".join(f"{t.table} ({t.describe()})" for t in result.comparison.differences)
            + ". Both sides and the replication objects are kept for repair; the application uses the target."
        )
    return result
