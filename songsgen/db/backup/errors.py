"""The errors of backups, restores and backup checks (defined in `songsgen.db.exceptions` with
the rest)."""

from __future__ import annotations

from songsgen.db.exceptions import BackupError, RestoreUndone, RestoreUnverified

__all__ = ["BackupError", "RestoreUndone", "RestoreUnverified"]
