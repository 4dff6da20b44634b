"""The errors of the database tools, under one base that commands map to `CommandError`."""

from __future__ import annotations


class DatabaseToolError(Exception):
    """Something a database command could not do; the message says what and what to do."""


class DatabaseBusy(DatabaseToolError):
    """Another schema-changing command holds the database."""


class MigrateRefused(DatabaseToolError):
    """The safe migrate stopped before changing anything."""


class MigrateFailed(DatabaseToolError):
    """Applying or verifying failed; `restored` says whether the database is back at its migrations."""

    def __init__(self, message: str, *, restored: bool) -> None:
        super().__init__(message)
        self.restored = restored


class DatabaseNotReady(DatabaseToolError):
    """The database cannot take a long-running writer yet: missing, read-only, or not migrated."""


class ReplicaError(DatabaseToolError):
    """Replication (Litestream) cannot run, or a replica cannot be read or restored as asked."""


class ReplicaBusy(ReplicaError):
    """Another `replicate` already replicates the database."""
