"""The errors of backups, restores and backup checks; the commands turn them into one-line CommandErrors."""

from __future__ import annotations


class BackupError(Exception):
    """A backup, restore or check cannot go on; the message says why and what to do."""


class RestoreUndone(BackupError):
    """The restored database failed its check and the live database was put back from the safety copy."""


class RestoreUnverified(BackupError):
    """The restored database failed its check and there was no earlier database to put back."""
