"""The safe migrate: its public API (the migrate command, monitoring and tests import from here).

`checks` registers the migrate's dbcheck checks; `run` is the guarded run itself; `lastrun`, `marker` and
`snapshot` are the records a run leaves that /health and /metrics read.
"""

from songsgen.db.migrate import checks, lastrun, marker, run, snapshot
from songsgen.db.migrate.apply import Applier

__all__ = ["Applier", "checks", "lastrun", "marker", "run", "snapshot"]
