"""The moves between databases: transferdb, dbcompare, pgupgrade; its public API (the commands import from here).

`checks` registers the moves' dbcheck check (replication slots); `pgupgrade` and `pgupgrade_leftovers` are
the upgrade's steps, which the pgupgrade command drives one by one.
"""

from songsgen.db.move import checks, pgupgrade, pgupgrade_leftovers
from songsgen.db.move.compare import Comparison, TableComparison, compare_databases, render
from songsgen.db.move.cutover import Bouncer, Cutover, cut_over
from songsgen.db.move.external import mask_url, settings_for_url
from songsgen.db.move.transfer import DEFAULT_BATCH_SIZE, describe, transfer

__all__ = [
    "Bouncer", "checks", "Comparison", "compare_databases", "cut_over", "Cutover", "DEFAULT_BATCH_SIZE", "describe",
    "mask_url", "pgupgrade", "pgupgrade_leftovers", "render", "settings_for_url", "TableComparison", "transfer",
]
