"""The errors of backups, restores and checks (defined in `songsgen.db.exceptions`)."""

from __future__ import annotations

from songsgen.db.exceptions import BackupError, RestoreUndone, RestoreUnverified

__all__ = ["BackupError", "RestoreUndone", "RestoreUnverified"]
