"""The target's server-side work beside the copy, on connections of its own (PostgreSQL only).

Index rebuilds and checksums keep the server busy while this process copies the next table.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from django.db import IntegrityError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.exceptions import TransferError
from songsgen.db.move import rowhash
from songsgen.db.move.compare import TableDigest, digest_table
from songsgen.db.move.tables import Table
from songsgen.db.move.transfer_defer import rebuild_one, saved_statements

WORKERS = 3  # server-side jobs at once: two cores, and an index build often waits on the disk


def _rebuild(connection: BaseDatabaseWrapper, *, table: str, name: str, create_sql: str) -> bool:
    return rebuild_one(connection, table, name, create_sql)


class Background:
    """Index rebuilds, foreign-key checks and target checksums of copied tables, on threads."""

    def __init__(self, target: BaseDatabaseWrapper, source: BaseDatabaseWrapper) -> None:
        self.alias, self.source = target.alias, source
        self.enabled = target.vendor == "postgresql"
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="transferdb") if self.enabled else None
        self.jobs: list[Future[Any]] = []
        self.digests: dict[str, Future[TableDigest]] = {}
        # (table, name, statement), run by wait()
        self.foreign_keys: list[tuple[str, str, str]] = []

    def _submit(self, work: Callable[[BaseDatabaseWrapper], Any]) -> Future[Any]:
        assert self.pool is not None

        def run() -> Any:
            connection = connections[self.alias]  # this thread's own connection to the target
            try:
                return work(connection)
            finally:
                connection.close()

        future = self.pool.submit(run)
        self.jobs.append(future)
        return future

    def table_copied(self, table: Table, target: BaseDatabaseWrapper) -> bool:
        """Queue the work for a table whose copy just ended; False when the caller must run it."""
        if not self.enabled:
            return False
        if rowhash.supported(table, self.source, target):
            self.digests[table.name] = self._submit(
                lambda connection: digest_table(connection, table, method=rowhash.METHOD))
        for name, create_sql, is_index in saved_statements(target, table.name):
            if is_index:
                self._submit(partial(_rebuild, table=table.name, name=name, create_sql=create_sql))
            else:
                self.foreign_keys.append((table.name, name, create_sql))
        return True

    def wait(self, target: BaseDatabaseWrapper) -> None:
        """Until every queued job is done, then the foreign keys, one after the other on
        `target`; the first failure is raised here. A foreign key locks the table it points to
        against an index build there, so they come last: no job ever waits for another's lock."""
        for future in self.jobs:
            future.result()
        for table, name, create_sql in self.foreign_keys:
            try:
                rebuild_one(target, table, name, create_sql)
            except IntegrityError as exc:
                # rows copied whole: --resume would meet the same rows again
                raise TransferError(
                    f"{table} holds rows whose foreign key {name} points at no row on the source (SQLite does not "
                    f"enforce foreign keys on files written without them): {str(exc).strip().splitlines()[0]}. "
                    "Fix or delete those rows on the source, then rerun with --truncate."
                ) from exc
        self.foreign_keys.clear()

    def target_digests(self) -> dict[str, TableDigest]:
        """The checksums computed so far, by table (call after wait())."""
        return {name: future.result() for name, future in self.digests.items()}

    def close(self) -> None:
        """Stop: queued jobs that have not started are dropped (a saved statement stays saved)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
