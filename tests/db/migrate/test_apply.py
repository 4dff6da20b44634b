"""The Applier between two of its transactions on SQLite: a writer that queued behind the first gets in."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import connection, transaction
from django.db.migrations.migration import Migration

from songsgen.db.migrate.apply import Applier

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's one write lock")
HOLD = 0.6  # seconds each of our transactions holds the lock: the writer is in its 100 ms retries by then


def test_a_writer_queued_behind_one_migration_does_not_wait_for_the_next(transactional_db):
    first, second = Migration("0001_first", "probe"), Migration("0002_second", "probe")
    second.atomic = False  # its own transactions: the group of the first is committed before it runs
    got_in: list[float] = []

    def writer() -> None:
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # waits for our lock, as a web process's write does
            got_in.append(time.monotonic())
            other.execute("ROLLBACK")
        finally:
            other.close()

    applier = Applier(connection)
    applier.start(first)  # BEGIN IMMEDIATE: the write lock is ours
    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(HOLD)
    applier.finish()
    applier.start(second)  # commits the first's transaction
    with transaction.atomic():  # the second migration's write, at once
        second_began = time.monotonic()
        time.sleep(HOLD)
    applier.finish()
    thread.join(timeout=30)
    assert got_in and got_in[0] < second_began  # it wrote between the two, not after both
