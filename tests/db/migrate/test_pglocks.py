"""Naming the sessions that block a waiting one, from a monitoring connection, on a real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection

from songsgen.db.migrate import pglocks
from songsgen.db.migrate.pglocks import Blocker

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL locks")


def test_backoff_is_exponential_with_full_jitter(monkeypatch):
    monkeypatch.setattr(pglocks.random, "uniform", lambda low, high: high)  # the ceiling of each draw
    assert pglocks.backoff_delays(6) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert pglocks.backoff_delays(2, base=1, cap=1.5) == [1, 1.5]
    assert pglocks.backoff_delays(0) == []
    assert pglocks.backoff_delays(1000)[-1] == 10.0
    monkeypatch.undo()
    assert all(0 <= d <= min(10.0, 0.5 * 2**i) for i, d in enumerate(pglocks.backoff_delays(8)))
    with pytest.raises(ValueError):
        pglocks.backoff_delays(-1)


def test_describe_one_line_each():
    found = [Blocker(1234, "psql", "idle in transaction", "2026-01-02T03:04:05+00:00",
                     "LOCK TABLE songs_song IN ACCESS EXCLUSIVE MODE", 1.5),
             Blocker(0, "", "prepared transaction", None, "", None)]
    assert pglocks.describe(found).splitlines() == [
        "pid 1234 (app 'psql', idle in transaction since 2026-01-02T03:04:05+00:00): "
        "LOCK TABLE songs_song IN ACCESS EXCLUSIVE MODE",
        "pid 0 (app '', prepared transaction since unknown): ",
    ]
    assert pglocks.describe([]) == ""


def _connect(application_name: str):
    import psycopg

    s = connection.settings_dict
    return psycopg.connect(host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"],
                           password=s["PASSWORD"], dbname=s["NAME"], application_name=application_name)


@pytest.fixture
def holder() -> Iterator[object]:
    """A second session holding ACCESS EXCLUSIVE on songs_song in an open transaction."""
    conn = _connect("songsgen-test-holder")
    conn.execute("LOCK TABLE songs_song IN ACCESS EXCLUSIVE MODE")
    yield conn
    conn.rollback()
    conn.close()


def _wait_for_blockers(ask, timeout: float = 15) -> list[Blocker]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ask()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("the waiting session never showed a blocker")


@postgres_only
@pytest.mark.django_db(transaction=True)  # songs_song committed, so the other sessions see it
def test_blockers_of_names_the_holder(holder):
    waiter = _connect("songsgen-test-waiter")
    waiter_pid = waiter.info.backend_pid
    thread = threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM songs_song").fetchone())
    thread.start()
    try:
        found = _wait_for_blockers(lambda: pglocks.blockers_of(connection, waiter_pid))
        assert [(b.pid, b.application_name) for b in found] == [(holder.info.backend_pid, "songsgen-test-holder")]
        blocker = found[0]
        assert blocker.state == "idle in transaction"
        assert blocker.query.startswith("LOCK TABLE songs_song") and blocker.query_start
        assert blocker.wait_seconds is not None and blocker.wait_seconds >= 0
        assert f"pid {holder.info.backend_pid} (app 'songsgen-test-holder', idle in transaction since" \
            in pglocks.describe(found)
    finally:
        holder.rollback()  # lets the waiter finish
        thread.join(timeout=15)
        waiter.close()
    assert not thread.is_alive()
    assert pglocks.blockers_of(connection, waiter_pid) == []


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_blockers_of_a_waiting_django_connection(holder):
    waiter = connection.copy()
    waiter.inc_thread_sharing()  # it waits in another thread; we only read its pid here
    pid = pglocks.backend_pid(waiter)

    def wait() -> None:
        with waiter.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM songs_song")

    thread = threading.Thread(target=wait)
    thread.start()
    try:
        found = _wait_for_blockers(lambda: pglocks.blockers(waiter))
        assert [b.pid for b in found] == [holder.info.backend_pid]
    finally:
        holder.rollback()
        thread.join(timeout=15)
        waiter.dec_thread_sharing()
        waiter.close()
    assert pid != pglocks.backend_pid(connection)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_autovacuum_hurry_is_set_by_a_superuser_and_skipped_without_error_for_a_plain_role():
    import psycopg

    from tests.conftest import database_url_for

    url = database_url_for(connection.settings_dict)
    with psycopg.connect(url, autocommit=True) as admin:
        assert pglocks.hurry_autovacuum(admin) is True
        assert admin.execute("SHOW deadlock_timeout").fetchone()[0] == "20ms"
        admin.execute("CREATE ROLE songsgen_plain LOGIN PASSWORD 'pw' NOSUPERUSER")
        try:
            plain = url.replace(url.split("//", 1)[1].split("@", 1)[0], "songsgen_plain:pw", 1)
            with psycopg.connect(plain, autocommit=True) as conn:
                assert pglocks.hurry_autovacuum(conn) is False  # no error: the migrate goes on without it
                assert conn.execute("SHOW deadlock_timeout").fetchone()[0] == "1s"
        finally:
            admin.execute("DROP ROLE songsgen_plain")
