"""The moves: transferdb, dbcompare, pgupgrade."""

from songsgen.db.move import checks  # noqa: F401 (registers its dbcheck checks)
