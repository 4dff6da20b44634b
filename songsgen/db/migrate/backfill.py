"""Batched, restartable backfills for data migrations: keyset batches, one transaction per batch.

Use from a migration with `atomic = False`; a writer waits one batch at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper

DEFAULT_BATCH_SIZE = 5_000
CHECKPOINT_EVERY = 20  # batches between SQLite WAL checkpoints


def run_in_batches(
    connection: BaseDatabaseWrapper,
    *,
    table: str,
    statement: str,
    params: Sequence[Any] = (),
    pk: str = "id",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str], None] | None = None,
    label: str = "backfill",
) -> int:
    """Run `statement` per keyset batch of `table`, with `params` then (low, high]: pk bounds.

    The statement must leave done rows alone (a NOT EXISTS or a still-to-do predicate), so a run
    that was interrupted can simply be run again. Returns the rows the statements reported changed.
    """
    qn = connection.ops.quote_name
    t, key = qn(table), qn(pk)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN({key}) - 1, MAX({key}) FROM {t}")
        last, top = cursor.fetchone()
    if top is None:
        return 0
    changed = batches = 0
    started = time.monotonic()
    while last < top:
        with connection.cursor() as cursor:
            # The upper key of the next batch, read from the primary key index alone.
            cursor.execute(
                f"SELECT MAX({key}) FROM (SELECT {key} FROM {t} WHERE {key} > %s ORDER BY {key} LIMIT %s) AS batch",
                [last, batch_size],
            )
            upper = cursor.fetchone()[0]
        if upper is None:
            break
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(statement, [*params, last, upper])
            changed += max(cursor.rowcount, 0)
        last, batches = upper, batches + 1
        if connection.vendor == "sqlite" and batches % CHECKPOINT_EVERY == 0:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if progress and (batches % 20 == 0 or last >= top):
            elapsed = time.monotonic() - started
            progress(f"  {label} {table}: up to {pk} {last:,} of {top:,}, {changed:,} rows, "
                     f"{changed / elapsed if elapsed else 0:,.0f} rows/s")
    return changed


def backfill(
    connection: BaseDatabaseWrapper,
    *,
    table: str,
    set_sql: str,
    pending: str = "1 = 1",
    params: Sequence[Any] = (),
    pk: str = "id",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str], None] | None = None,
) -> int:
    """`UPDATE table SET <set_sql>` on every row matching `pending`, in keyset batches; rows."""
    qn = connection.ops.quote_name
    key = qn(pk)
    statement = f"UPDATE {qn(table)} SET {set_sql} WHERE ({pending}) AND {key} > %s AND {key} <= %s"
    return run_in_batches(
        connection, table=table, statement=statement, params=params, pk=pk, batch_size=batch_size,
        progress=progress,
    )
