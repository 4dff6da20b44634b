"""The lock meter's SQLite checkpointing: outside the measured hold, as often as each transaction, and undone after.

The rest of the meter is exercised through the rehearsal (test_rehearse.py) and the live migrate
(test_safe_migrate.py), which report what it measures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection, transaction

from songsgen.db.migrate import lockmeter

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's WAL checkpoint")
TRANSACTIONS = 30
BLOB = 100_000  # bytes per transaction: about 25 pages of 4 KiB


def autocheckpoint() -> int:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        return int(cursor.fetchone()[0])


def wal_bytes() -> int:
    wal = Path(f"{connection.settings_dict['NAME']}-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.fixture
def blobs(transactional_db):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE meter_blob (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE meter_blob")


def test_metered_transactions_are_checkpointed_after_their_lock_span(blobs, monkeypatch):
    monkeypatch.setattr(lockmeter, "CHECKPOINT_EVERY", 0.0)  # after each transaction (else at most once a second)
    before = autocheckpoint()
    assert before > 0
    with lockmeter.metered(connection) as meter:
        meter.begin_step(True)
        # SQLite's own checkpoint would run inside COMMIT, timed as a hold no writer waits for: it is off.
        assert autocheckpoint() == 0
        for _ in range(TRANSACTIONS):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("INSERT INTO meter_blob (body) VALUES (randomblob(%s))", [BLOB])
        meter.end_step()
        grown = wal_bytes()
    assert autocheckpoint() == before  # the connection is as it was for whatever runs on it next
    assert len([span for span in meter.spans if span[0] == lockmeter.WRITE]) == TRANSACTIONS
    # Each transaction's frames were copied into the database after its commit, so the next one reused the
    # WAL from its start: it holds about one transaction, not all thirty (about 3 MB without the checkpoints).
    assert grown < 4 * BLOB
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM meter_blob")
        assert cursor.fetchone()[0] == TRANSACTIONS
