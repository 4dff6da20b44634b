"""Every error of the database tools, under one base: `DatabaseToolError`.

Each message says what is wrong and what to do; the command-line boundary prints it as one line.
Every module imports them from here, never through the module that raises them.
"""

from __future__ import annotations


class DatabaseToolError(Exception):
    """Something a database command could not do; the message says what and what to do."""


# --- migrate
# ----------------------------------------------------------------------------------------
class DatabaseBusy(DatabaseToolError):
    """Another schema-changing command holds the database."""


class MigrateRefused(DatabaseToolError):
    """The safe migrate stopped before changing anything."""


class MigrateFailed(DatabaseToolError):
    """Applying or verifying failed; `restored`: the database is back at its migrations."""

    def __init__(self, message: str, *, restored: bool) -> None:
        super().__init__(message)
        self.restored = restored


class VerificationFailed(DatabaseToolError):
    """The live schema or the data's integrity does not match the applied migrations."""


class UndoFailed(DatabaseToolError):
    """A migration this run committed could not be unapplied (irreversible, or reverse failed)."""


class RehearsalError(DatabaseToolError):
    """The scratch database could not be made (no CREATEDB, a failed restore, a missing tool)."""


class SquawkError(DatabaseToolError):
    """squawk is missing, or ran but gave no report we can read."""


class DatabaseNotReady(DatabaseToolError):
    """The database cannot take a long-running writer yet: missing, read-only, or not migrated."""


# --- backups, snapshots, restores
# -------------------------------------------------------------------
class BackupError(DatabaseToolError):
    """A backup, restore or check cannot go on; the message says why and what to do."""


class RestoreUndone(BackupError):
    """The restored database failed its check; the live one was put back from the safety copy."""


class RestoreUnverified(BackupError):
    """The restored database failed its check and could not be put back: the operator must act."""


class SnapshotError(DatabaseToolError):
    """A snapshot could not be taken, checked or restored."""


class SnapshotUnsupported(SnapshotError):
    """This database vendor has no snapshot support."""


class PgDumpError(DatabaseToolError):
    """pg_dump, pg_restore or psql failed, or is missing."""


# --- moving between databases
# ------------------------------------------------------------------------
class DatabaseUnavailable(DatabaseToolError):
    """A database URL cannot be used: bad syntax, unsupported engine, missing file, no link."""


class TransferError(DatabaseToolError):
    """The transfer cannot run as asked; the message says what to do."""


class DependencyCycle(DatabaseToolError):
    """Tables reference each other in a cycle; no order copies one before the other."""


# --- replication
# ---------------------------------------------------------------------------------------
class ReplicaError(DatabaseToolError):
    """Replication (Litestream) cannot run, or a replica cannot be read or restored as asked."""


class ReplicaBusy(ReplicaError):
    """Another `replicate` already replicates the database."""


# --- major upgrade
# -------------------------------------------------------------------------------------
class UpgradeError(DatabaseToolError):
    """The upgrade cannot start or go on as asked; the message says what to do."""


class UpgradeUnproven(UpgradeError):
    """The cutover happened but the proof found differences: both sides are kept for repair."""
