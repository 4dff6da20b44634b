"""Point-in-time restore from the replica, through the same gate as every restore, and the drill.

Litestream restores into a temporary file; `songsgen.db.backup.restore_sqlite` takes over.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

from songsgen.db import backup
from songsgen.db.backup import litestream
from songsgen.db.backup.replica import Replication, replication
from songsgen.db.exceptions import ReplicaError

Log = Callable[[str], None]
FUTURE_SLACK = timedelta(seconds=1)  # a --to-time this close to now is "now", not the future
LEVEL_STEPS = {0: "each sync", 1: "30 s", 2: "5 min", 3: "1 h", litestream.SNAPSHOT_LEVEL: "snapshot"}


def moment(value: str) -> datetime:
    """argparse type of --to-time: an ISO 8601 time with its zone (2026-11-30T14:02:00Z), in UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a time; write it as 2026-11-30T14:02:00Z") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no time zone; add Z for UTC (2026-11-30T14:02:00Z)")
    return parsed.astimezone(UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Level:
    """The files of one Litestream level: the span of time they cover and how finely."""

    level: int
    first: datetime
    last: datetime
    files: int

    @property
    def step(self) -> str:
        return LEVEL_STEPS.get(self.level, f"level {self.level}")


@dataclass(frozen=True)
class RestorePoints:
    """What the replica can restore: from `earliest` to `latest` (UTC, to the second), by level."""

    url: str
    earliest: datetime | None
    latest: datetime | None
    levels: list[Level]

    @property
    def first_moment(self) -> datetime | None:
        """The first whole second surely restorable: Litestream lists the first point cut to its
        second, so a moment in that second may be before it; the next second is not (the listing
        prints this one)."""
        return None if self.earliest is None else self.earliest.replace(microsecond=0) + timedelta(seconds=1)

    def describe(self) -> list[str]:
        """The listing `dbrestore --list-restore-points` prints."""
        if self.latest is None or self.first_moment is None:
            return [f"No restore points in {self.url} yet: is `manage.py replicate` running?"]
        lines = [f"Restore points in {self.url}: any moment since {_stamp(self.first_moment)}; the newest commit was "
                 f"shipped at {_stamp(self.latest)}.",
                 f"  {'level':<6} {'from':<21} {'to':<21} {'files':>7}  step"]
        for lv in self.levels:
            lines.append(f"  {lv.level:<6} {_stamp(lv.first):<21} {_stamp(lv.last):<21} {lv.files:>7}  {lv.step}")
        lines.append("A restore gives the newest state shipped before the time asked for: to the sync for the last "
                     "5 minutes, to the nearest compaction step before that.")
        return lines


def restore_points(rep: Replication) -> RestorePoints:
    """List the replica's LTX files as time ranges."""
    files = litestream.ltx_files(rep.url)
    by_level: dict[int, list[litestream.LtxFile]] = {}
    for f in files:
        by_level.setdefault(f.level, []).append(f)
    levels = [Level(n, fs[0].timestamp, fs[-1].timestamp, len(fs)) for n, fs in sorted(by_level.items())]
    # A restore starts from a snapshot, or from the very first transaction, older than
    # the moment asked for.
    starts = [f.timestamp for f in files if f.level == litestream.SNAPSHOT_LEVEL or f.min_txid == 1]
    earliest = min(starts) if starts else None
    latest = max((f.timestamp for f in files), default=None)
    return RestorePoints(rep.shown_url, earliest, latest, levels)


def _check_moment(points: RestorePoints, when: datetime) -> bool:
    """Refuse a moment the replica cannot restore; True when past the newest point (use newest)."""
    now = datetime.now(UTC)
    if when > now + FUTURE_SLACK:
        raise ReplicaError(f"--to-time {_stamp(when)} is in the future (it is {_stamp(now)} now)")
    if points.earliest is None or points.latest is None:
        # in parentheses: the commands end the message with their own full stop
        raise ReplicaError(f"the replica {points.url} holds nothing to restore yet (is `manage.py replicate` running?)")
    if when < points.earliest:
        raise _before_first(when, points)
    # Listed times are cut to the second: only a moment a whole second past the
    # newest is surely past it.
    return when >= points.latest + timedelta(seconds=1)


def _before_first(when: datetime, points: RestorePoints) -> ReplicaError:
    first = f" ({_stamp(points.first_moment)} and later are)" if points.first_moment else ""
    return ReplicaError(f"--to-time {_stamp(when)} is before the first restore point{first}; "
                        "`manage.py dbrestore --list-restore-points` lists them")


def fetch(rep: Replication, when: datetime | None, log: Log) -> tuple[Path, datetime | None]:
    """Have Litestream restore the replica (as of `when`) into a new temporary file beside it.

    Returns the file, which the caller removes, and the time of the replica's newest restore point.
    """
    points = restore_points(rep)
    if when is None:
        if points.latest is None:
            raise ReplicaError(f"the replica {rep.shown_url} holds nothing to restore yet (is `manage.py "
                               "replicate` running?)")
        asked = None
    else:
        asked = None if _check_moment(points, when) else when
    folder = rep.database.parent
    backup.remove_stale_temp_files(folder)
    target = backup.temp_path(folder, ".sqlite3")
    try:
        asof = f"as of {when.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}" if when else "(newest state)"
        log(f"Restoring {rep.shown_url} {asof} with Litestream.")
        try:
            litestream.restore(rep.url, target, asked)
        except ReplicaError as exc:
            # Listed times are cut to the second: a moment within the first point's second may
            # be before it, one within the newest point's second past it (then the newest
            # state is the answer).
            if asked is None or points.latest is None or "timestamp does not exist" not in str(exc):
                raise
            if asked < points.latest:
                raise _before_first(asked, points) from None
            litestream.restore(rep.url, target)
    except BaseException:
        backup.remove_file(target)
        backup.remove_file(Path(f"{target}.tmp"))
        raise
    return target, points.latest


def restore_from_replica(
    settings_dict: dict[str, Any], when: datetime | None, *, log: Log, confirm: Callable[[], None] = lambda: None
) -> backup.RestoreResult:
    """Restore the live SQLite database from its replica (as of `when`) through the restore gate.

    `confirm` runs once the replica is restored into its temporary file, before the live database
    is touched.
    """
    rep = replication(settings_dict)
    target, _latest = fetch(rep, when, log)
    try:
        confirm()
        with open(target, "rb") as stream:
            return backup.restore_sqlite(stream, rep.database, timeout=float(settings.SQLITE_BUSY_TIMEOUT_MS) / 1000,
                                         log=log)
    finally:
        backup.remove_file(target)


def check_replica(settings_dict: dict[str, Any], *, log: Log = lambda _: None) -> backup.BackupReport:
    """Restore the replica's newest state to a temporary file, checked like a backup.

    Its age is the age of the newest transaction the replica holds.
    """
    rep = replication(settings_dict)
    target, latest = fetch(rep, None, log)
    try:
        with open(target, "rb") as stream:
            return backup.check_backup(stream, rep.shown_url, target.stat().st_size, rep.database.parent, latest)
    finally:
        backup.remove_file(target)
