"""What `pgupgrade` runs leave behind: each run recorded on the source, an abandoned run's objects
removed (by the next run, or by `pgupgrade --cleanup`)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from songsgen.db.exceptions import UpgradeError
from songsgen.db.move.external import mask_url
from songsgen.db.move.pgupgrade import MY_SUBSCRIPTION, NAME, Run, Side, code_tables, connect, exists, quote, url_params
from songsgen.db.move.tables import MIGRATIONS_TABLE

RECORDS = f"{NAME}_runs"
OURS = NAME.replace("_", r"\_") + "%"  # LIKE: our publications, slots and subscriptions
SYNC = r"pg\_%\_sync\_%"  # LIKE: any subscription's table-sync slot
CLEANUP = "manage.py pgupgrade --cleanup --from"


@dataclass(frozen=True)
class Record:
    """A run as recorded on the source."""

    run: Run
    target: str
    subid: int | None
    sysid: str | None
    started: datetime
    pid: int
    host: str
    switched: datetime | None

    def owns_sync_slot(self, name: str) -> bool:
        """`pg_<subid>_sync_<relid>_<sysid>` made by this run's subscription."""
        if self.subid is None or not name.startswith(f"pg_{self.subid}_sync_"):
            return False
        return self.sysid is None or name.endswith(f"_{self.sysid}")

    def __str__(self) -> str:
        return (f"run {self.run.id} to {self.target}, started {self.started:%Y-%m-%d %H:%M:%S %Z} by pid {self.pid} "
                f"on {self.host}")


def _records(conn: psycopg.Connection, oid: int) -> list[Record]:
    if not exists(conn, RECORDS):
        return []
    rows = conn.execute(f"SELECT id, target, subid, sysid, started_at, pid, host, switched_at FROM {RECORDS} "
                        "ORDER BY started_at").fetchall()
    return [Record(Run(r[0], oid), r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]


def records(source: Side) -> list[Record]:
    """Every run recorded on the source (a live one included)."""
    with connect(source, role="source") as conn:
        return _records(conn, source.oid)


def record(source: Side, run: Run, target: Side) -> None:
    """The run recorded on the source before it creates anything there."""
    with connect(source, role="source") as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {RECORDS} (id text PRIMARY KEY, target text NOT NULL, subid oid, sysid text, "
            "started_at timestamptz NOT NULL DEFAULT now(), pid integer NOT NULL, host text NOT NULL, "
            "switched_at timestamptz)"
        )
        conn.execute(f"INSERT INTO {RECORDS} (id, target, pid, host) VALUES (%s, %s, %s, %s)",
                     (run.id, mask_url(target.url, mask=""), os.getpid(), socket.gethostname()))


def record_subscription(source: Side, target: Side, run: Run) -> None:
    """The subscription's oid and the target's system id, before it is enabled (sync slot names)."""
    with connect(target, role="target") as conn:
        (subid,) = conn.execute(f"SELECT oid FROM pg_subscription WHERE {MY_SUBSCRIPTION}",
                                (run.subscription,)).fetchone() or (None,)
        try:
            sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        except psycopg.errors.InsufficientPrivilege:
            sysid = None  # then any sync slot of that subscription oid counts as this run's
    with connect(source, role="source") as conn:
        conn.execute(f"UPDATE {RECORDS} SET subid = %s, sysid = %s WHERE id = %s",
                     (subid, sysid[0] if sysid else None, run.id))


def mark_switched(source: Side, run: Run) -> None:
    """The application uses the target now: a later run must not treat this one as abandoned."""
    with connect(source, role="source") as conn:
        conn.execute(f"UPDATE {RECORDS} SET switched_at = now() WHERE id = %s", (run.id,))


# --- finding what abandoned runs left
# ---------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    name: str
    active_pid: int | None
    retained: int | None  # bytes of WAL it keeps
    client: str  # who streams from it, when active


@dataclass
class Abandoned:
    """One abandoned run: its record (if any), how to reach its target, whether its sub is there."""

    run: Run
    record: Record | None = None
    reach: dict[str, Any] | None = None
    subscribed: bool = False
    why: str = ""  # why its target could not be reached
    gone: bool = False  # its target database no longer exists
    slots: list[Slot] = field(default_factory=list)
    publication: bool = False

    @property
    def target(self) -> str:
        return self.record.target if self.record else "its target"


@dataclass
class Leftovers:
    runs: list[Abandoned]
    marker: bool  # the source's marker table
    records: bool  # the record table

    def __bool__(self) -> bool:
        return bool(self.runs or self.marker or self.records)


def _run_of(name: str, prefix: str) -> str | None:
    """The run id in a publication (NAME) or slot (NAME_<oid>) name; "" for the old names."""
    if name == prefix:
        return ""
    return name[len(prefix) + 1:] if name.startswith(prefix + "_") else None


def _subscriptions(params: dict[str, Any]) -> list[str]:
    with psycopg.connect(**params, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT subname FROM pg_subscription WHERE subname LIKE %s AND subdbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())", (OURS,))]


def _reach(target: str, given: Sequence[str]) -> tuple[dict[str, Any] | None, str, bool]:
    """How to log in to a recorded target: as recorded (libpq's password file or PGPASSWORD),
    else with the password of a given URL for the same user. (params or None, why not, the
    database is gone)."""
    base = url_params(target)
    candidates = [base]
    for url in given:
        params = url_params(url)
        if params.get("user") == base.get("user") and params.get("password"):
            candidates.append({**base, "password": params["password"]})
    why = ""
    for params in candidates:
        try:
            with psycopg.connect(**{"connect_timeout": 10, **params}, autocommit=True):
                return params, "", False
        except psycopg.Error as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if exc.sqlstate == "3D000" or f'database "{base.get("dbname")}" does not exist' in why:
                return None, why, True
    return None, why, False


def survey(source: Side, *, given: Sequence[str] = (), current: Side | None = None) -> Leftovers:
    """What abandoned runs left, read without writing; an UpgradeError if one cut over, or if
    a slot of ours is active and its subscriber cannot be stopped from here (another run, or
    an unreachable target)."""
    prefix = f"{NAME}_{source.oid}"
    with connect(source, role="source") as conn:
        recs = _records(conn, source.oid)
        slots = [Slot(*row) for row in conn.execute(
            "SELECT s.slot_name, s.active_pid, pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint, "
            "coalesce(r.application_name || ' from ' || coalesce(host(r.client_addr), 'a local socket'), '') "
            "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
            "WHERE s.database = current_database() AND (s.slot_name LIKE %s OR s.slot_name LIKE %s) ORDER BY 1",
            (OURS, SYNC))]
        publications = [r[0] for r in conn.execute("SELECT pubname FROM pg_publication WHERE pubname LIKE %s",
                                                   (OURS,))]
        marker = exists(conn, NAME)
        table = exists(conn, RECORDS)
    runs = {r.run.id: Abandoned(r.run, r) for r in recs}
    for name in publications:
        found = _run_of(name, NAME)
        if found is not None:
            runs.setdefault(found, Abandoned(Run(found, source.oid))).publication = True
    for slot in slots:
        found = _run_of(slot.name, prefix) if slot.name.startswith(NAME) else next(
            (r.run.id for r in recs if r.owns_sync_slot(slot.name)), None)
        if found is not None:
            runs.setdefault(found, Abandoned(Run(found, source.oid))).slots.append(slot)
    on_current = _subscriptions(current.params) if current is not None else []
    for ab in runs.values():
        if ab.record is not None and ab.record.switched is not None:
            raise UpgradeError(
                f"An earlier pgupgrade ({ab.record}) cut over from this source at "
                f"{ab.record.switched:%Y-%m-%d %H:%M:%S}: the application uses that database now. Check it with "
                f"`manage.py dbcompare`, then run `manage.py pgupgrade --finish --from {source.label} --to "
                f"{ab.target}` (with its password)."
            )
        if current is not None and ab.run.subscription in on_current:
            ab.reach, ab.subscribed = current.params, True
        elif ab.record is not None:
            ab.reach, ab.why, ab.gone = _reach(ab.record.target, given)
            ab.subscribed = ab.reach is not None and ab.run.subscription in _subscriptions(ab.reach)
    for ab in runs.values():
        for slot in ab.slots:
            if slot.active_pid is not None and not ab.subscribed:
                reason = (f"{ab.target} cannot be reached ({ab.why})" if ab.why
                          else f"no subscription of it found on {ab.target}")
                raise UpgradeError(
                    f"Replication slot {slot.name} of an earlier pgupgrade is active (walsender pid {slot.active_pid}"
                    f", {slot.client or 'a subscriber'}) and {reason}: another pgupgrade may be running, or that "
                    f"subscription still streams. Disable it where it lives (ALTER SUBSCRIPTION {ab.run.subscription}"
                    f" DISABLE), or give that database's URL as --to to `{CLEANUP} {source.label}`; then run again."
                )
    return Leftovers(list(runs.values()), marker, table)


# --- removing them
# ---------------------------------------------------------------------------------------------


def drop_slots(conn: psycopg.Connection, names: Sequence[str]) -> list[tuple[str, int | None]]:
    """Drop these slots on the source, ending the walsenders still holding them (their
    subscription is disabled or gone, so nothing reconnects); (name, WAL bytes it retained) of
    each one dropped."""
    dropped = []
    for name in names:
        for _ in range(100):
            row = conn.execute("SELECT active_pid, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                               "FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone()
            if row is None:
                break
            if row[0] is None:
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                except psycopg.errors.ObjectInUse:
                    continue  # taken again meanwhile: end that walsender too
                except psycopg.errors.UndefinedObject:
                    break
                dropped.append((name, row[1]))
                break
            conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            time.sleep(0.1)
        else:
            raise UpgradeError(f"Replication slot {name} stays active: its subscriber reconnects. Disable the "
                               "subscription that uses it, then run again.")
    return dropped


def _run_slots(conn: psycopg.Connection, run: Run, rec: Record | None) -> list[str]:
    """The run's slot and its subscription's table-sync slots, as they are now."""
    names = [run.slot]
    if rec is not None:
        names += [r[0] for r in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE %s",
            (SYNC,)) if rec.owns_sync_slot(r[0])]
    return names


def drop_subscription(target: dict[str, Any], source: Side, run: Run,
                      rec: Record | None) -> list[tuple[str, int | None]] | None:
    """Disable and drop the run's subscription on its target, its slots on the source dropped in
    between (so DROP SUBSCRIPTION finds none active); the slots dropped, or None when there is
    no such subscription."""
    dropped: list[tuple[str, int | None]] = []
    with psycopg.connect(**target, autocommit=True) as conn:
        mine = conn.execute(f"SELECT 1 FROM pg_subscription WHERE {MY_SUBSCRIPTION}", (run.subscription,))
        if mine.fetchone() is None:
            return None
        conn.execute(f"ALTER SUBSCRIPTION {run.subscription} DISABLE")
        conn.execute(f"ALTER SUBSCRIPTION {run.subscription} SET (slot_name = NONE)")
        for attempt in range(5):
            with connect(source, role="source") as src:
                dropped += drop_slots(src, _run_slots(src, run, rec))
            # it drops the table-sync slots it knows of on the source: one still held makes it fail
            try:
                conn.execute(f"DROP SUBSCRIPTION {run.subscription}")
                break
            except psycopg.Error:
                if attempt == 4:
                    raise
                time.sleep(0.2)
    return dropped


def _slot_lines(dropped: Sequence[tuple[str, int | None]]) -> list[str]:
    return [f"removed replication slot {name}" + (f" (it retained {kept:,} bytes of WAL)" if kept is not None else "")
            for name, kept in dropped]


def _drop_on_source(source: Side, run: Run, rec: Record | None, *, keep_record: bool) -> list[str]:
    """The run's slots, publication and record on the source; what was removed, as lines."""
    with connect(source, role="source") as conn:
        lines = _slot_lines(drop_slots(conn, _run_slots(conn, run, rec)))
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (run.publication,)).fetchone():
            conn.execute(f"DROP PUBLICATION {run.publication}")
            lines.append(f"removed publication {run.publication}")
        if rec is not None and not keep_record:
            conn.execute(f"DELETE FROM {RECORDS} WHERE id = %s", (run.id,))
            lines.append(f"removed the record of {rec}")
    return lines


def _tidy(source: Side, *, marker: bool) -> list[str]:
    """The source's marker table (`marker`), and the record table once no run is recorded."""
    lines = []
    with connect(source, role="source") as conn:
        if marker and exists(conn, NAME):
            conn.execute(f"DROP TABLE {NAME}")
            lines.append(f"removed marker table {NAME}")
        if exists(conn, RECORDS) and conn.execute(f"SELECT 1 FROM {RECORDS} LIMIT 1").fetchone() is None:
            conn.execute(f"DROP TABLE {RECORDS}")
    return lines


def remove(source: Side, found: Leftovers, *, report: Callable[[str], None]) -> None:
    """Everything `survey` found, reported line by line; the source made writable again."""
    for ab in found.runs:
        keep = False
        if ab.reach is not None and ab.subscribed:
            dropped = drop_subscription(ab.reach, source, ab.run, ab.record) or []
            report(f"disabled and dropped subscription {ab.run.subscription} on {mask_url(ab.target)}")
            for line in _slot_lines(dropped):
                report(line)
        elif ab.record is not None and ab.reach is None and not ab.gone:
            keep = True  # the only way to find that subscription again
            report(f"could not reach {ab.target} ({ab.why}): its subscription {ab.run.subscription} may still retry "
                   f"against the source; give that database's URL as --to to `{CLEANUP} {source.label}`, or there "
                   f"run ALTER SUBSCRIPTION {ab.run.subscription} DISABLE, then SET (slot_name = NONE), then DROP "
                   "SUBSCRIPTION; the record is kept until then")
        for line in _drop_on_source(source, ab.run, ab.record, keep_record=keep):
            report(line)
    for line in _tidy(source, marker=found.marker):
        report(line)
    release_source(source)  # an interrupted read-only cutover


def on_target(target: Side) -> bool:
    """The target holds an earlier run's subscription or marker table (may be emptied, reused)."""
    with connect(target, role="target") as conn:
        marker = exists(conn, NAME)
    return marker or bool(_subscriptions(target.params))


def clear_target(source: Side, target: Side) -> None:
    """An earlier run's subscriptions and marker table dropped on this target, its rows emptied."""
    for name in _subscriptions(target.params):
        drop_subscription(target.params, source, Run(_run_of(name, NAME) or "", source.oid), None)
    with connect(target, role="target") as conn:
        conn.execute(f"DROP TABLE IF EXISTS {NAME}")
        names = [t.name for t in code_tables(conn) if t.name != MIGRATIONS_TABLE]
        if names:
            conn.execute(f"TRUNCATE {', '.join(quote(n) for n in names)} RESTART IDENTITY")


def drop_replication(source: Side, target: Side, run: Run, *, empty_target: bool) -> None:
    """This run's subscription, publication, slots, marker tables and record dropped;
    with `empty_target`, the copied rows too (the target is left migrated and empty,
    ready for a new run)."""
    rec = next((r for r in records(source) if r.run.id == run.id), None)
    drop_subscription(target.params, source, run, rec)
    with connect(target, role="target") as conn:
        conn.execute(f"DROP TABLE IF EXISTS {NAME}")
        if empty_target:
            names = [t.name for t in code_tables(conn) if t.name != MIGRATIONS_TABLE]
            if names:
                conn.execute(f"TRUNCATE {', '.join(quote(n) for n in names)} RESTART IDENTITY")
    _drop_on_source(source, run, rec, keep_record=False)
    _tidy(source, marker=True)


def runs_on_target(source: Side, target: Side) -> list[Run]:
    """The runs whose subscription is on this target (`--finish` after a cutover)."""
    return [Run(_run_of(name, NAME) or "", source.oid) for name in _subscriptions(target.params)]


def release_source(source: Side) -> None:
    """The source writable again (an interrupted cutover may have made it read-only)."""
    with connect(source, role="source") as conn:
        conn.execute(f"ALTER DATABASE {quote(source.dbname)} RESET default_transaction_read_only")
