"""What a killed `manage.py pgupgrade` leaves on the source, removed by the next run or by `--cleanup`; the
refusals while a slot of ours is active or a physical replica streams from the source; `dbcheck`'s warning about an
inactive slot.

Real servers (test_pgupgrade's fixtures), real `manage.py pgupgrade` processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.db.move import test_pgupgrade as base
from tests.db.move.test_pgupgrade import (
    NAME,
    RECORDS,
    REPO,
    _env,
    _server,
    _wait_for,
    objects,
    pgupgrade,
    source_read_only,
    subscribed,
)
from tests.db.move.test_transfer import manage, ok, refused, sql
from tests.pgreplica import streaming_replica

pytestmark = base.pytestmark
pg15, seeded, new_db = base.pg15, base.seeded, base.new_db  # the same servers and databases as test_pgupgrade

HELD = 4242  # an advisory lock the test holds on a target to keep its copy of songs_song going


class Running:
    """A `manage.py pgupgrade` in the background; its stderr collected line by line."""

    def __init__(self, *args: str, source: str, target: str, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "pgupgrade", "--from", source, "--to", target, "--interval",
             "0.2", *args], env=_env(source, data_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, fragment: str, timeout: float = 120) -> None:
        _wait_for(lambda: any(fragment in line for line in self.lines) or self.proc.poll() is not None, timeout)
        assert any(fragment in line for line in self.lines), "".join(self.lines)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)


def ours(source: str) -> dict[str, list]:
    """What pgupgrade runs have on the source: records, slots (table-sync ones too), publications."""
    table = sql(source, "SELECT to_regclass(%s)::text", (RECORDS,))[0][0]
    return {
        "records": [r[0] for r in sql(source, f"SELECT id FROM {RECORDS}")] if table else [],
        "slots": [r[0] for r in sql(source, "SELECT slot_name FROM pg_replication_slots WHERE database = "
                                            "current_database() ORDER BY 1")],
        "publications": [r[0] for r in sql(source, "SELECT pubname FROM pg_publication")],
    }


def sync_slots(source: str) -> list[str]:
    return [s for s in ours(source)["slots"] if s.startswith("pg_") and "_sync_" in s]


def subscription(target: str) -> str:
    (name,), = sql(target, "SELECT subname FROM pg_subscription WHERE subdbid = "
                           "(SELECT oid FROM pg_database WHERE datname = current_database())")
    return name


def only_run(source: str) -> dict[str, list]:
    """The objects of the one run recorded on the source (asserted to be its alone)."""
    now = ours(source)
    (run,) = now["records"]
    assert [s for s in now["slots"] if not s.startswith("pg_")] == [s for s in now["slots"] if s.endswith(run)]
    assert now["publications"] == [f"{NAME}_{run}"]
    return now


def test_runs_killed_at_each_step_leave_nothing_once_a_run_to_a_new_target_starts(pg15, seeded, new_db, tmp_path):
    """kill -9 during the initial copy, while following the lag, inside the cutover's pause: each time the next
    run, to a NEW database, removes everything the killed one left on the source (its slot, its subscription's
    table-sync slots, publication, record) and disables and drops its subscription on the abandoned target."""
    # 1. Killed during the initial copy. T1's songs_song takes its rows through a trigger that waits for a lock
    # the test holds, so that table's copy is still running (its table-sync slot on the source) at the kill.
    t1 = new_db(pg15)
    ok(manage("migrate", "-v0", url=t1, data_dir=tmp_path))
    sql(t1, "CREATE FUNCTION held() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"PERFORM pg_advisory_lock_shared({HELD}); PERFORM pg_advisory_unlock_shared({HELD}); RETURN NEW; END $$")
    sql(t1, "CREATE TRIGGER held BEFORE INSERT ON songs_song FOR EACH ROW EXECUTE FUNCTION held()")
    sql(t1, "ALTER TABLE songs_song ENABLE ALWAYS TRIGGER held")  # fires in the subscription's workers too
    hold = psycopg.connect(t1, autocommit=True)
    hold.execute("SELECT pg_advisory_lock(%s)", (HELD,))
    try:
        first = Running(source=seeded, target=t1, data_dir=tmp_path)
        first.wait_for("copy ")
        _wait_for(lambda: bool(sync_slots(seeded)), timeout=60)
        killed = ours(seeded)
        first.kill()
        assert sync_slots(seeded) and subscribed(t1)  # what the issue found left behind

        # 2. A run to T2, killed while it follows the lag.
        t2 = new_db(pg15)
        second = Running(source=seeded, target=t2, data_dir=tmp_path)
        second.wait_for("lag ")
        now = ours(seeded)
        assert sync_slots(seeded) == [] and not subscribed(t1)
        assert not set(killed["records"] + killed["slots"] + killed["publications"]) & set(sum(now.values(), []))
        assert any("removed replication slot pg_" in line for line in second.lines), "".join(second.lines)
        assert only_run(seeded) == now
        second.kill()
    finally:
        hold.close()

    # 3. A run to T3, killed inside the cutover's pause: the source is read-only then, and T3's marker table is
    # locked, so the marker row the pause waits for is not applied there.
    t3 = new_db(pg15)
    third = Running(source=seeded, target=t3, data_dir=tmp_path)
    third.wait_for("lag ")
    assert not subscribed(t2)
    killed = only_run(seeded)
    assert killed["records"] != now["records"]
    hold = psycopg.connect(t3)
    hold.execute(f"LOCK TABLE {NAME} IN ACCESS EXCLUSIVE MODE")
    asker = Running("--cutover", source=seeded, target=t3, data_dir=tmp_path)  # asks the running one to cut over
    try:
        third.wait_for("cutover: lag")
        _wait_for(lambda: source_read_only(seeded), timeout=60)
        third.kill()
    finally:
        hold.close()
        asker.proc.wait(timeout=60)

    # 4. A run to T4 with --cutover: nothing of any killed run is left, the source is no longer frozen by run 3.
    t4 = new_db(pg15)
    result = ok(pgupgrade("--cutover", "--json", source=seeded, target=t4, data_dir=tmp_path))
    assert json.loads(result.stdout)["proof"] == "equal"
    assert "removed publication " + killed["publications"][0] in result.stderr
    assert ours(seeded) == {"records": [], "slots": [], "publications": []}
    assert objects(seeded, t4)["source marker"] == []
    assert not any(subscribed(t) for t in (t1, t2, t3, t4))


def test_cleanup_on_its_own_and_dbcheck_warns_about_an_inactive_slot(pg15, seeded, new_db, tmp_path):
    """`pgupgrade --cleanup --from SRC` (and a second run) refused while a run is live; after a kill -9, and once
    an operator has disabled the subscription (the slot is then inactive, and dbcheck warns), it removes and lists
    what the run left, on both sides, and says so again (nothing) when run twice; a slot not ours is kept."""
    target = new_db(pg15)
    run = Running(source=seeded, target=target, data_dir=tmp_path)
    run.wait_for("lag ")
    left = ours(seeded)
    err = refused(manage("pgupgrade", "--cleanup", "--from", seeded, url=seeded, data_dir=tmp_path),
                  "A pgupgrade is running from this source", target.rsplit("/", 1)[1], "Ctrl-C")
    assert len(err.strip().splitlines()) == 1 and ours(seeded) == left == only_run(seeded)
    assert f"run {left['records'][0]}" in err
    err = refused(pgupgrade(source=seeded, target=new_db(pg15), data_dir=tmp_path),  # a second run, to elsewhere
                  "Another pgupgrade is already replicating this source", f"slot {left['slots'][0]}")
    assert len(err.strip().splitlines()) == 1 and ours(seeded) == left
    run.kill()
    sql(target, f"ALTER SUBSCRIPTION {subscription(target)} DISABLE")
    _wait_for(lambda: sql(seeded, "SELECT count(*) FROM pg_replication_slots WHERE active")[0][0] == 0)
    sql(seeded, "SELECT pg_create_logical_replication_slot('another_tool', 'test_decoding')")
    try:
        report = json.loads(ok(manage("dbcheck", "--slots", "--json", url=seeded, data_dir=tmp_path)).stdout)
        warned = {p["subject"]: p for p in report["problems"] if p["check"] == "slots"}
        assert warned[left["slots"][0]]["severity"] == "warning" and "MiB of WAL" in warned[left["slots"][0]]["detail"]
        assert "pgupgrade --cleanup --from" in warned[left["slots"][0]]["fix"]
        assert "pg_drop_replication_slot('another_tool')" in warned["another_tool"]["fix"]

        out = ok(manage("pgupgrade", "--cleanup", "--from", seeded, url=seeded, data_dir=tmp_path)).stdout
        for line in (f"disabled and dropped subscription {NAME}_{left['records'][0]}",
                     f"removed replication slot {left['slots'][0]}", f"removed publication {left['publications'][0]}",
                     f"removed the record of run {left['records'][0]}"):
            assert line in out, out
        assert ours(seeded) == {"records": [], "slots": ["another_tool"], "publications": []}
        assert objects(seeded, target)["source marker"] == [] and not subscribed(target)
        again = ok(manage("pgupgrade", "--cleanup", "--from", seeded, url=seeded, data_dir=tmp_path)).stdout
        assert "Nothing to remove" in again
        report = json.loads(ok(manage("dbcheck", "--slots", "--json", url=seeded, data_dir=tmp_path)).stdout)
        assert [p["subject"] for p in report["problems"]] == ["another_tool"]
    finally:
        sql(seeded, "SELECT pg_drop_replication_slot('another_tool')")


def test_refuses_while_a_slot_of_ours_streams_to_a_target_it_cannot_reach(pg15, seeded, new_db, tmp_path):
    """A killed run's subscription still streams from its slot, and its target no longer lets us in (the
    password changed): neither a new run nor --cleanup may drop the slot under it. Given the target's URL,
    --cleanup disables and drops that subscription, then the slot."""
    for server in _server(18):
        target = new_db(server)
        run = Running(source=seeded, target=target, data_dir=tmp_path)
        run.wait_for("lag ")
        left, sub = ours(seeded), subscription(target)
        run.kill()
        sql(server, "ALTER ROLE postgres PASSWORD 'changed-after-the-run'")
        parts = urlsplit(target)
        moved = urlunsplit(parts._replace(netloc=f"postgres:changed-after-the-run@{parts.hostname}:{parts.port}"))
        for attempt in (manage("pgupgrade", "--cleanup", "--from", seeded, url=seeded, data_dir=tmp_path),
                        pgupgrade(source=seeded, target=new_db(pg15), data_dir=tmp_path)):
            err = refused(attempt, f"Replication slot {left['slots'][0]}", "is active", "cannot be reached",
                          "password authentication failed", f"ALTER SUBSCRIPTION {sub} DISABLE")
            assert len(err.strip().splitlines()) == 1 and ours(seeded) == left == only_run(seeded)
        out = ok(manage("pgupgrade", "--cleanup", "--from", seeded, "--to", moved, url=seeded, data_dir=tmp_path))
        assert f"disabled and dropped subscription {sub}" in out.stdout
        assert ours(seeded) == {"records": [], "slots": [], "publications": []} and not subscribed(moved)



def test_refuses_while_a_physical_replica_streams_from_the_source(pg15, seeded, new_db, tmp_path):
    """A streaming replica cannot follow a logical upgrade: pgupgrade names it and says how to rebuild it."""
    target = new_db(pg15)
    with streaming_replica(pg15) as replica:
        replica.wait_caught_up()
        err = refused(pgupgrade(source=seeded, target=target, data_dir=tmp_path), "physical replicas",
                      "walreceiver from 127.0.0.1", "DATABASE_REPLICA_URLS", "pg_basebackup -R")
        assert len(err.strip().splitlines()) == 1
        assert objects(seeded, target) == {"publication": [], "slot": [], "source marker": [], "subscription": [],
                                           "target tables": []}
        assert not source_read_only(seeded)


def test_a_replication_role_without_stats_rights_still_sees_the_physical_replica(pg15, seeded, new_db, tmp_path):
    """pgupgrade run as a REPLICATION role (not superuser, no pg_read_all_stats) must not miss a streaming standby."""
    target = new_db(pg15)
    role, password = f"repl_{Path(tmp_path).name[-8:].lower().replace('-', '_')}", "pw-repl-role"
    sql(pg15, f"CREATE ROLE {role} LOGIN REPLICATION PASSWORD '{password}'")
    try:
        with psycopg.connect(seeded, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {urlsplit(seeded).path.lstrip('/')} OWNER TO {role}")  # CREATE PUBLICATION
            conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
            for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall():
                conn.execute(f'ALTER TABLE public."{table}" OWNER TO {role}')
        parts = urlsplit(seeded)
        as_role = urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}"))
        with streaming_replica(pg15) as replica:
            replica.wait_caught_up()
            err = refused(pgupgrade(source=as_role, target=target, data_dir=tmp_path), "physical replicas",
                          "walreceiver", "pg_basebackup -R")
            assert len(err.strip().splitlines()) == 1
    finally:
        with psycopg.connect(seeded, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO {urlsplit(seeded).username}")
            conn.execute(f"DROP OWNED BY {role}")
        sql(pg15, f"DROP ROLE {role}")
