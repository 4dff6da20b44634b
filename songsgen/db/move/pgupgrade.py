"""A PostgreSQL major upgrade by logical replication: refusals, set-up, progress and lag, clean-up.

Every refusal comes before anything is written; `songsgen.db.move.cutover` does the switch.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.exceptions import DatabaseUnavailable, UpgradeError
from songsgen.db.move.external import mask_url, open_database, settings_for_url
from songsgen.db.move.tables import MIGRATIONS_TABLE, Table, dependency_order
from songsgen.db.pgconn import connect_params
from songsgen.db.replicas.standbys import physical_standbys
from songsgen.progress import duration

# the marker table; the prefix of each run's publication, slot and subscription
NAME = "songsgen_pgupgrade"
# pg_subscription is shared by the server's databases: ours is the one of this database.
MY_SUBSCRIPTION = "subname = %s AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
REQUIRED_EXTENSIONS = ("pg_trgm",)  # what our migrations create on PostgreSQL (songs 0004)
SWITCHED = 2  # the id of the marker row written on the target once the application uses it


@dataclass(frozen=True)
class Side:
    """One database of the upgrade: its URL, psycopg keywords and facts read by the checks."""

    url: str
    params: dict[str, Any]
    major: int
    dbname: str
    oid: int = 0

    @property
    def label(self) -> str:
        return mask_url(self.url)


@dataclass(frozen=True)
class Run:
    """One run's names, carrying its id so that they can be found again whatever became
    of the process (the id "" gives the names of runs made before ids: one publication
    and slot per source)."""

    id: str
    source_oid: int

    @classmethod
    def new(cls, source: Side) -> Run:
        return cls(secrets.token_hex(4), source.oid)

    @property
    def publication(self) -> str:
        return f"{NAME}_{self.id}" if self.id else NAME

    @property
    def subscription(self) -> str:
        return self.publication

    @property
    def slot(self) -> str:
        """Slots are per server, so the name holds the source database's oid too."""
        return f"{NAME}_{self.source_oid}_{self.id}" if self.id else f"{NAME}_{self.source_oid}"


@contextmanager
def connect(side: Side | str, *, role: str = "database") -> Iterator[psycopg.Connection]:
    """An autocommit psycopg connection to a side (or a URL); DatabaseUnavailable, URL masked."""
    url = side.url if isinstance(side, Side) else side
    params = side.params if isinstance(side, Side) else url_params(url)
    if isinstance(side, Side):
        # so a read-only cutover closes every session but ours
        params = {**params, "application_name": NAME}
    try:
        conn = psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"Cannot connect to the {role} database {mask_url(url)}: {first}") from exc
    with conn:
        # our own sessions write, even on a source made read-only by a cutover
        if isinstance(side, Side):
            conn.execute("SET default_transaction_read_only = off")
        yield conn


def url_params(url: str) -> dict[str, Any]:
    """psycopg keywords for a PostgreSQL URL (a database, or PgBouncer's admin console)."""
    db = settings_for_url(url)
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise UpgradeError(f"{mask_url(url)} is not a PostgreSQL URL: pgupgrade moves between PostgreSQL servers "
                           "(transferdb moves from SQLite).")
    return connect_params(db)


def one(conn: psycopg.Connection, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The single row a query returns (a catalog read that always has one)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise UpgradeError(f"No row from: {query}")
    return tuple(row)


def conninfo(side: Side) -> str:
    """The libpq connection string the target's subscription uses to reach the source."""
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in side.params.items()})


def code_tables(conn: psycopg.Connection) -> list[Table]:
    """The tables the code knows that exist on this database, in dependency order."""
    present = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    return [t for t in dependency_order() if t.name in present]


def exists(conn: psycopg.Connection, name: str) -> bool:
    """Whether the table `name` exists on this connection's database."""
    return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() not in (None, (None,))


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- 1. refusals
# -------------------------------------------------------------------------------------------


def describe(url: str, role: str) -> tuple[Side, tuple[Any, ...]]:
    """One side connected and described; (the side, the server's and database's identity)."""
    side = Side(url, url_params(url), 0, "")
    with connect(side, role=role) as conn:
        major = int(one(conn, "SHOW server_version_num")[0]) // 10000
        dbname, oid = one(conn, "SELECT datname, oid FROM pg_database WHERE datname = current_database()")
        start, port = one(conn, "SELECT pg_postmaster_start_time(), inet_server_port()")
    return Side(url, side.params, major, dbname, int(oid)), (start, port, dbname)


def open_sides(source_url: str, target_url: str) -> tuple[Side, Side]:
    """Both sides connected once and described; refusals: unreachable, same, downgraded servers."""
    (source, src_id), (target, dst_id) = describe(source_url, "source"), describe(target_url, "target")
    if src_id == dst_id:
        raise UpgradeError("The source and the target are the same database; give the new server's database as --to.")
    if target.major < source.major:
        raise UpgradeError(
            f"The target runs PostgreSQL {target.major}, older than the source's {source.major}: pgupgrade only "
            "moves to the same or a newer major. Give a target on a newer server."
        )
    return source, target


def check_source(source: Side) -> None:
    """wal_level=logical, no physical replicas, migrated to this code's state, or an UpgradeError saying how."""
    with connect(source, role="source") as conn:
        (wal_level,) = one(conn, "SHOW wal_level")
        (can_replicate,) = one(conn, "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user")
        standbys = physical_standbys(conn)
    if wal_level != "logical":
        raise UpgradeError(
            f"The source's wal_level is {wal_level}, not logical: logical replication needs it. Set it with "
            "`ALTER SYSTEM SET wal_level = logical` (or wal_level = logical in postgresql.conf) and restart the "
            "source server (a restart is required), then run pgupgrade again."
        )
    if not can_replicate:
        raise UpgradeError(f"The source's user in {source.label} may not replicate: give a superuser or a role "
                           "WITH REPLICATION that owns the tables.")
    if standbys:
        raise UpgradeError(
            f"The source's server has physical replicas, which cannot follow it to a new major: {', '.join(standbys)}. "
            "Remove them from DATABASE_REPLICA_URLS and stop them, run pgupgrade, then rebuild each from the new "
            "server with pg_basebackup -R (docs/postgres.md, \"Read replicas\")."
        )
    with open_database(source.url, role="source") as connection:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        pending = [f"{m.app_label}.{m.name}" for m, backwards in plan if not backwards]
        applied = set(executor.recorder.applied_migrations())
    known = set(executor.loader.graph.nodes)
    unknown = sorted(f"{a}.{n}" for a, n in applied - known)
    if pending or unknown:
        detail = f"not applied: {', '.join(pending[:5])}" if pending else f"unknown here: {', '.join(unknown[:5])}"
        raise UpgradeError(
            f"The source has another migration history than this code ({detail}). Run pgupgrade from the release "
            "that matches the source (or migrate the source first), so the target gets the same schema."
        )


def check_target(target: Side, source: Side, *, ours: bool) -> bool:
    """The target empty and able to hold our schema; True when already migrated (no migrate)."""
    with connect(target, role="target") as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        missing = [e for e in REQUIRED_EXTENSIONS if e not in available]
        if missing:
            raise UpgradeError(
                f"The target server lacks the extension(s) {', '.join(missing)} that the schema needs (PostgreSQL's "
                "contrib modules, e.g. Debian's postgresql-NN package): install them on the target server first."
            )
        if not tables:
            return False
        known = {t.name: t for t in dependency_order()}
        occupied = [
            name for name in sorted(tables)
            if name != NAME and not (name in known and known[name].migrate_created)
            and conn.execute(f"SELECT 1 FROM {quote(name)} LIMIT 1").fetchone() is not None
        ]
        history = set()
        if MIGRATIONS_TABLE in tables:
            history = set(conn.execute(f"SELECT app, name FROM {quote(MIGRATIONS_TABLE)}").fetchall())
    if occupied and not ours:
        raise UpgradeError(
            f"The target already holds data (in {', '.join(occupied[:5])}). pgupgrade copies into an empty "
            "database: give a freshly created database on the new server as --to."
        )
    with connect(source, role="source") as conn:
        source_history = set(conn.execute(f"SELECT app, name FROM {quote(MIGRATIONS_TABLE)}").fetchall())
    if history and history != source_history and not ours:
        raise UpgradeError(
            "The target is migrated to another migration history than the source. Give a freshly created "
            "database on the new server as --to."
        )
    return MIGRATIONS_TABLE in tables


# --- one run at a time, and a cutover asked for from another shell
# ----------------------------------------------


@contextmanager
def run_lock(source: Side) -> Iterator[bool]:
    """Hold the source's pgupgrade lock (a session advisory lock) while the block runs;
    yields False, holding nothing, when another pgupgrade holds it. A killed run's lock goes
    with its connection."""
    with connect(source, role="source") as conn:
        (got,) = one(conn, "SELECT pg_try_advisory_lock(hashtext(%s))", (NAME,))
        yield bool(got)


def request_cutover(source: Side) -> None:
    """Ask the running pgupgrade to cut over (a row in its marker table on the source, polled)."""
    with connect(source, role="source") as conn:
        try:
            conn.execute(f"INSERT INTO {NAME} (id, token) VALUES (0, 'cutover') ON CONFLICT (id) DO NOTHING")
        except psycopg.errors.UndefinedTable:
            raise UpgradeError("The running pgupgrade has not started replicating yet; ask again shortly.") from None


def cutover_requested(source: Side) -> bool:
    """True once another shell's `pgupgrade --cutover` asked for the switch."""
    with connect(source, role="source") as conn:
        return conn.execute(f"SELECT 1 FROM {NAME} WHERE id = 0").fetchone() is not None


def wait_for_lock(source: Side, *, interval: float) -> None:
    """Until the running pgupgrade has finished (its lock is free again)."""
    while True:
        with connect(source, role="source") as conn:
            (free,) = one(conn, "SELECT pg_try_advisory_lock(hashtext(%s))", (NAME,))
        if free:  # the session ends with the block: the lock goes with it
            return
        time.sleep(interval)


def switched(target: Side) -> bool:
    """True when an earlier run cut over to this target (marker row 2): its data is live now."""
    with connect(target, role="target") as conn:
        if not exists(conn, NAME):
            return False
        return conn.execute(f"SELECT 1 FROM {NAME} WHERE id = {SWITCHED}").fetchone() is not None


# --- 3. and 4. set-up
# ------------------------------------------------------------------------------------------


def migrate_target(target: Side) -> None:
    """Our own migrations against the target, as an operator would run them (a subprocess)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = target.url
    manage = Path(settings.BASE_DIR) / "manage.py"
    result = subprocess.run(
        [sys.executable, str(manage), "migrate", "--noinput", "--no-backup", "-v0"],
        env=env, capture_output=True, text=True, cwd=manage.parent,
    )
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no message"]
        raise UpgradeError(f"Migrating the target failed: {last[0]}")


def start_replication(source: Side, target: Side, run: Run) -> list[Table]:
    """Marker tables, publication, slot, the subscription created disabled; tables replicated."""
    marker = f"CREATE TABLE {NAME} (id bigint PRIMARY KEY, token text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
    with connect(target, role="target") as conn:
        tables = code_tables(conn)
        with conn.transaction():
            conn.execute(marker)
            # migrate's own rows give way to the source's (same history, checked),
            # with the source's ids.
            rewritten = [t.name for t in tables if t.migrate_created]
            conn.execute(f"TRUNCATE {', '.join(quote(n) for n in rewritten)} CASCADE")
    with connect(source, role="source") as conn:
        source_tables = {t.name for t in code_tables(conn)}
        tables = [t for t in tables if t.name in source_tables]
        conn.execute(marker)
        names = ", ".join(quote(n) for n in [*(t.name for t in tables), NAME])
        conn.execute(f"CREATE PUBLICATION {run.publication} FOR TABLE {names}")
        # The slot made here, not by CREATE SUBSCRIPTION: that would hang were both
        # databases on one server.
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (run.slot,))
    with connect(target, role="target") as conn:
        conn.execute(
            f"CREATE SUBSCRIPTION {run.subscription} CONNECTION {psycopg.sql.quote(conninfo(source))} "
            f"PUBLICATION {run.publication} WITH (create_slot = false, slot_name = {run.slot}, enabled = false)"
        )
    return tables


def enable_subscription(target: Side, run: Run) -> None:
    """Start the subscription's workers (its initial copy), once its oid is on the source."""
    with connect(target, role="target") as conn:
        conn.execute(f"ALTER SUBSCRIPTION {run.subscription} ENABLE")


# --- progress and lag
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyState:
    """The initial copy: per table (name, rows copied so far, rows in the source, finished)."""

    tables: list[tuple[str, int, int, bool]]
    elapsed: float

    @property
    def done(self) -> bool:
        return all(finished for *_, finished in self.tables)

    def lines(self) -> list[str]:
        """A progress line per table still copying or just finished: rows, rate, ETA."""
        out = []
        for name, copied, counted, finished in self.tables:
            total = max(counted, copied)  # rows written since the count are copied too
            rate = copied / self.elapsed if self.elapsed > 0 else 0.0
            eta = "done" if finished else (f"ETA {duration((total - copied) / rate)}" if rate > 0 else "ETA ?")
            out.append(f"copy {name}: {copied:,}/{total:,} rows, {rate:,.0f} rows/s, {eta}")
        return out


def copy_state(target: Side, run: Run, totals: dict[str, int], started: float) -> CopyState:
    """The subscription's initial copy, per table (pg_subscription_rel, pg_stat_progress_copy)."""
    with connect(target, role="target") as conn:
        states = dict(conn.execute(
            "SELECT c.relname, r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
            f"JOIN pg_class c ON c.oid = r.srrelid WHERE {MY_SUBSCRIPTION}", (run.subscription,),
        ).fetchall())
        copying = dict(conn.execute(
            "SELECT c.relname, p.tuples_processed FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid "
            "WHERE p.datname = current_database()"
        ).fetchall())
    rows = []
    for name, total in totals.items():
        finished = states.get(name) in ("s", "r")
        copied = total if finished else int(copying.get(name, 0))
        rows.append((name, copied, total, finished))
    return CopyState(rows, time.monotonic() - started)


@dataclass(frozen=True)
class Lag:
    """How far the target is behind: WAL bytes not yet confirmed, and the replay delay in s."""

    bytes: int
    seconds: float

    def __str__(self) -> str:
        return f"lag {self.bytes:,} bytes, {self.seconds:.3f} s"


def vacuum(source: Side, target: Side, tables: list[Table]) -> None:
    """VACUUM the tables on both sides (the target's with ANALYZE), as autovacuum would in its
    own time: the visibility map lets the counts inside the cutover's pause read the primary
    key indexes alone (a freshly copied or loaded table has none, so each count read the whole
    heap: 4.3 s of a 5.8 s pause at 1M songs), and the target's planner has its statistics
    before the application arrives."""
    for side, role, command in ((target, "target", "VACUUM (ANALYZE)"), (source, "source", "VACUUM")):
        with connect(side, role=role) as conn:
            for table in tables:
                conn.execute(f"{command} {quote(table.name)}")


def lag(source: Side, slot: str) -> Lag:
    """The subscription's lag, read on the source (its replication slot and walsender)."""
    with connect(source, role="source") as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), "
            "EXTRACT(epoch FROM r.replay_lag) FROM pg_replication_slots s "
            "LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = %s", (slot,),
        ).fetchone()
    if row is None:
        raise UpgradeError("The replication slot on the source is gone: another process dropped it. Run again.")
    return Lag(int(row[0] or 0), float(row[1] or 0.0))


def wait_for_copy(
    source: Side, target: Side, run: Run, tables: list[Table], *, report: Callable[[str], None],
    interval: float = 1.0,
) -> tuple[dict[str, int], float]:
    """Report the initial copy until every table is synchronized; (rows per table, seconds)."""
    with connect(source, role="source") as conn:
        totals = {t.name: int(one(conn, f"SELECT count(*) FROM {quote(t.name)}")[0]) for t in tables}
    started = time.monotonic()
    reported: set[str] = set()
    while True:
        state = copy_state(target, run, totals, started)
        for line, (name, copied, _, finished) in zip(state.lines(), state.tables, strict=True):
            if name in reported:
                continue
            if finished:  # its last line, once
                reported.add(name)
                report(line)
            elif copied:  # being copied now
                report(line)
        if state.done:
            return totals, state.elapsed
        with connect(target, role="target") as conn:
            (worker,) = one(conn, "SELECT count(pid) FROM pg_stat_subscription WHERE subid = "
                            f"(SELECT oid FROM pg_subscription WHERE {MY_SUBSCRIPTION})", (run.subscription,))
        if not worker and state.elapsed > 30:
            raise UpgradeError("The subscription has no worker running on the target: see the target's server log.")
        time.sleep(interval)
