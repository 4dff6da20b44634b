"""The connection_created receiver: SQLite pragmas on every connection, PostgreSQL untouched."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.db import connection, connections
from django.db.backends.signals import connection_created

from songsgen.db import sqlite as sqlite_pragmas

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite pragmas")


def _fresh_connection():
    """A brand-new connection to the default database, as a new process would open."""
    conn = connections.create_connection("default")
    conn.ensure_connection()
    return conn


@sqlite_only
@pytest.mark.django_db
def test_fresh_connection_has_our_pragmas(settings):
    conn = _fresh_connection()
    try:
        with conn.cursor() as cur:
            values = {}
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "cache_size"):
                cur.execute(f"PRAGMA {name}")
                values[name] = cur.fetchone()[0]
    finally:
        conn.close()
    assert values == {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "foreign_keys": 1,
        "busy_timeout": settings.SQLITE_BUSY_TIMEOUT_MS,
        "cache_size": settings.SQLITE_CACHE_SIZE,
    }


@sqlite_only
@pytest.mark.django_db
def test_pragmas_follow_settings(settings):
    settings.SQLITE_BUSY_TIMEOUT_MS = 2500
    settings.SQLITE_CACHE_SIZE = -20000
    conn = _fresh_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("PRAGMA busy_timeout")
            assert cur.fetchone()[0] == 2500
            cur.execute("PRAGMA cache_size")
            assert cur.fetchone()[0] == -20000
    finally:
        conn.close()


@sqlite_only
def test_write_transactions_begin_immediate():
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_receiver_connected_once():
    sqlite_pragmas.install()
    sqlite_pragmas.install()
    receivers = [r for r in connection_created.receivers if r[0][0] == sqlite_pragmas.DISPATCH_UID]
    assert len(receivers) == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL leg")
@pytest.mark.django_db
def test_postgres_connection_untouched():
    executed: list[str] = []
    conn = connections.create_connection("default")
    with conn.execute_wrapper(lambda execute, sql, *a: executed.append(sql) or execute(sql, *a)):
        conn.ensure_connection()
        sqlite_pragmas.apply_pragmas(connection=conn)
    conn.close()
    assert not any("PRAGMA" in sql.upper() for sql in executed)


WRITER = textwrap.dedent(
    """
    import os, sys, django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    django.setup()
    from django.db import transaction
    from accounts.models import User
    from songs.models import Song
    tag, n = sys.argv[1], int(sys.argv[2])
    user = User.objects.create_user(username=f"writer-{tag}", email=f"{tag}@example.com")
    for i in range(n):
        with transaction.atomic():
            # read then write in one transaction: the pattern that fails with a deferred BEGIN
            count = Song.objects.filter(user=user).count()
            Song.objects.create(user=user, title=f"{tag}-{i}-{count}", genre="rock")
    print("ok", tag)
    """
)


@pytest.mark.django_db(transaction=True)
def test_two_processes_write_concurrently_without_locked_errors(subprocess_env):
    n = 300
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, tag, str(n)], env=subprocess_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert "database is locked" not in err
        assert proc.returncode == 0, err
        assert out.startswith("ok")
    from songs.models import Song

    assert Song.objects.filter(title__startswith="a-").count() == n
    assert Song.objects.filter(title__startswith="b-").count() == n
