"""The safe migrate."""

from songsgen.db.migrate import checks  # noqa: F401 (registers its dbcheck checks)
