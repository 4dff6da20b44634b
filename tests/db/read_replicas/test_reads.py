"""Reads through the router against a real primary and a real streaming replica, over HTTP to a real server."""

from __future__ import annotations

import time

import psycopg
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from accounts.models import User
from tests.db.read_replicas.conftest import AdminSession, served_by
from tests.db.read_replicas.proxy import CountingProxy
from tests.devserver import dev_server
from tests.factories import make_user
from tests.pgreplica import Replica

CHANGELIST = "/admin/songs/song/"
INTERVAL = 3  # SONGSGEN_REPLICA_CHECK_SECONDS of the stopped-replica test


def _admin(username: str) -> User:
    user = make_user(username=username)
    user.is_staff = user.is_superuser = True
    # the server's own hasher: the tests' fast one is not in its settings
    user.password = PBKDF2PasswordHasher().encode("pw-for-tests", "replicasalt")
    user.save()
    return user


def _replica_clients(replica: Replica, table: str) -> int:
    """Backends on the replica whose last query read `table` (our own look excluded)."""
    with psycopg.connect(replica.url(connection.settings_dict["NAME"]), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND query LIKE %s", (f"%{table}%",)).fetchone()
    return int(row[0]) if row else 0


def _replica_scans(replica: Replica, table: str) -> int:
    """How many times the replica's own backends have scanned `table` (a standby counts its local reads)."""
    with psycopg.connect(replica.url(connection.settings_dict["NAME"]), autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                           "WHERE relname = %s", (table,)).fetchone()
    return int(row[0]) if row else 0


def test_added_song_is_on_the_next_page_while_a_lagging_replica_serves_readers(replica, replica_env):
    """Read-your-writes by WAL position: with the replica 2 s behind, the writer always sees its song (the primary
    serves it) while a reader without writes is served by the replica."""
    writer_user, _ = _admin("writer"), _admin("reader")
    replica.wait_caught_up()
    replica.set_delay(2)
    with dev_server(replica_env) as base:
        writer, reader = AdminSession(base), AdminSession(base)
        writer.login("writer", "pw-for-tests")
        reader.login("reader", "pw-for-tests")
        replica.wait_caught_up()  # the reader's login has been replayed: from now on it has no write ahead
        served = []
        for n in range(100):
            page = writer.post("/admin/songs/song/add/", {
                "user": str(writer_user.pk), "title": f"lagging song {n}", "genre": "jazz", "priority": "0",
                "style_prompt": "", "lyrics": "", "_save": "Save"})
            assert f"lagging song {n}" in page, f"try {n}: the song just added is not on the change list"
            served.append(served_by(page))
        assert set(served) == {"primary"}
        scans = _replica_scans(replica, "songs_song")
        page = reader.get(CHANGELIST)
        assert served_by(page) == "replica1", page[page.find("served-by") - 200:][:400]
        assert "behind the primary" in page
        # The replica itself read the songs: a backend there last ran it, or its own scan counters moved (they
        # reach the statistics within a second or so of the page; the backend may have run another query since).
        deadline = time.monotonic() + 15
        while _replica_clients(replica, "songs_song") < 1 and _replica_scans(replica, "songs_song") <= scans:
            assert time.monotonic() < deadline, "the replica shows no read of the songs table"
            time.sleep(0.2)


def test_stopped_replica_pages_answer_from_the_primary_and_reads_return_when_it_is_back(replica, replica_env):
    """A dead replica costs one failed connection per check interval, not one per request; back, it serves again."""
    _admin("reader")
    replica.wait_caught_up()
    proxy = CountingProxy(replica.port)
    url = replica_env["DATABASE_REPLICA_URLS"].replace(f":{replica.port}/", f":{proxy.port}/")
    env = dict(replica_env, DATABASE_REPLICA_URLS=url, SONGSGEN_REPLICA_CHECK_SECONDS=str(INTERVAL))
    try:
        with dev_server(env) as base:
            reader = AdminSession(base)
            reader.login("reader", "pw-for-tests")
            replica.wait_caught_up()
            assert _until_served_by_replica(reader), "a reader without writes was not served by the replica"
            replica.stop()
            before, started = proxy.attempts, time.monotonic()
            pages = [reader.get(CHANGELIST) for _ in range(20)]
            intervals = (time.monotonic() - started) // INTERVAL + 1  # a bound on the looks, not a timing
            assert {served_by(page) for page in pages} == {"primary"}
            assert "replica1 does not answer" in pages[0]
            assert proxy.attempts - before <= intervals, "the dead replica was tried on every request"
            replica.start()
            replica.wait_caught_up()
            assert _until_served_by_replica(reader), "reads did not return to the replica once it was back"
    finally:
        proxy.close()


def _until_served_by_replica(reader: AdminSession, tries: int = 60) -> bool:
    for _ in range(tries):
        if served_by(reader.get(CHANGELIST)) == "replica1":
            return True
        time.sleep(0.25)
    return False
