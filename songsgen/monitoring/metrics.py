"""/metrics: prometheus-client collectors that read the probes at scrape time, never at import.

A failing probe is left out of that scrape (`songsgen_probe_success 0`); the others still answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.dateparse import parse_datetime
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from songsgen.db.migrate.runstatus import RECORDED
from songsgen.monitoring import probes

logger = logging.getLogger("songsgen.monitoring")
T = TypeVar("T")


def gauge(name: str, documentation: str, value: float | None, **labels: str) -> Iterator[Metric]:
    """One gauge sample, or nothing when the value is unknown (absent, not a fake zero)."""
    if value is None:
        return
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), float(value))
    yield family


class ProbeResults:
    """Runs probes for one scrape and remembers which failed, for `songsgen_probe_success`."""

    def __init__(self) -> None:
        self.success: dict[str, bool] = {}

    def run(self, name: str, probe: Callable[[], T]) -> T | None:
        try:
            result = probe()
        except Exception:  # one broken probe must not take the whole scrape down
            logger.exception("Monitoring probe %s failed", name)
            self.success[name] = False
            return None
        self.success[name] = True
        return result

    def metric(self) -> Metric:
        family = GaugeMetricFamily("songsgen_probe_success", "1 when the probe answered in this scrape.",
                                   labels=["probe"])
        for name, ok in sorted(self.success.items()):
            family.add_metric([name], 1.0 if ok else 0.0)
        return family


Contributor = Callable[[BaseDatabaseWrapper, ProbeResults], Iterator[Metric]]


class ScrapeCollector(Collector):
    """One scrape: every contributor's metrics for one database, then which probes answered."""

    def __init__(self, contributors: Sequence[Contributor], alias: str = DEFAULT_DB_ALIAS) -> None:
        self.contributors = contributors
        self.alias = alias

    def collect(self) -> Iterator[Metric]:
        results = ProbeResults()
        for contributor in self.contributors:
            yield from contributor(connections[self.alias], results)
        yield results.metric()


def database_metrics(connection: BaseDatabaseWrapper, results: ProbeResults) -> Iterator[Metric]:
    """Backups, the safe migrate, room, sizes and replication of the database."""
    backups = results.run("backups", lambda: probes.backups(connection))
    if backups is not None:
        yield from _backups(backups)
    yield from _migrate(connection, results)
    room = results.run("room", lambda: probes.backup_room(connection))
    if room is not None:
        yield from gauge("songsgen_backup_room_needed_bytes", "Free space the next backup needs (database "
                         "size x factor + margin).", room.needed)
        yield from _free(room.free, results)
    sizes = results.run("sizes", lambda: probes.database_sizes(connection))
    if sizes is not None:
        yield from gauge("songsgen_database_size_bytes", "Size of the database.", sizes.get("database_bytes"))
        yield from gauge("songsgen_database_wal_size_bytes", "Size of the write-ahead log (absent where "
                         "the database role may not read it).", sizes.get("wal_bytes"))
    replication = results.run("replication", lambda: probes.replication(connection))
    if replication is not None:
        yield from _replication(replication)


def _backups(found: probes.Backups) -> Iterator[Metric]:
    yield from gauge("songsgen_backup_count", "Backups of this database in the backup storage.", found.count)
    if found.newest is None:
        return
    yield from gauge("songsgen_backup_last_timestamp_seconds", "When the newest backup was made (Unix time).",
                     found.newest.created.timestamp())
    yield from gauge("songsgen_backup_age_seconds", "Age of the newest backup.", found.age_seconds)
    yield from gauge("songsgen_backup_last_size_bytes", "Size of the newest backup file.", found.newest_size)


def _free(backups_free: int, results: ProbeResults) -> Iterator[Metric]:
    family = GaugeMetricFamily("songsgen_disk_free_bytes", "Free space in the folder.", labels=["folder"])
    family.add_metric(["backups"], float(backups_free))
    data_free = results.run("data_disk", probes.data_free_bytes)
    if data_free is not None:
        family.add_metric(["data"], float(data_free))
    yield family


def _migrate(connection: BaseDatabaseWrapper, results: ProbeResults) -> Iterator[Metric]:
    state = results.run("migrate", lambda: probes.migrate_state(connection))
    if state is not None:
        yield from gauge("songsgen_migrate_in_progress", "1 while a migrate applies migrations.",
                         state.state == probes.RUNNING)
        yield from gauge("songsgen_migrate_interrupted", "1 when a migrate died half-way (run migrate "
                         "--resume-restore).", state.state == probes.INTERRUPTED)
    last = results.run("last_migrate", lambda: probes.last_migrate(connection))
    if not last:
        return
    yield from gauge("songsgen_migrate_last_success", "1 when the last migrate left the database where it "
                     "was asked to (0: rolled back or failed).", bool(last.get("success")))
    yield from gauge("songsgen_migrate_last_duration_seconds", "How long the last migrate ran.",
                     _number(last.get("seconds")))
    yield from gauge("songsgen_migrate_last_longest_lock_seconds", "The longest the last migrate kept writers "
                     "waiting (one transaction of its own: a group, a chunk of an online rebuild, a cut-over).",
                     _number(last.get("longest_lock_seconds")))
    yield from gauge("songsgen_migrate_last_online_rebuilds",
                     "Changes the last migrate made online (SQLite table rebuilds, PostgreSQL safe DDL).",
                     _number(last.get("online_rebuilds")))
    finished = parse_datetime(str(last.get("finished") or ""))
    yield from gauge("songsgen_migrate_last_timestamp_seconds", "When the last migrate finished (Unix time).",
                     finished.timestamp() if finished else None)
    status = str(last.get("status") or "unknown")
    yield from gauge("songsgen_migrate_last_result", "The last migrate's result, as its status label "
                     f"({', '.join(sorted(RECORDED))}).", 1, status=status)


def _replication(status: probes.Replication) -> Iterator[Metric]:
    yield from gauge("songsgen_replication_configured", "1 when SONGSGEN_REPLICA_URL is set.", status.configured)
    yield from gauge("songsgen_replication_lag_seconds", "How far the replica is behind the database.",
                     status.lag_seconds)
    yield from gauge("songsgen_replication_last_sync_timestamp_seconds", "When the replica last caught up "
                     "(Unix time).", status.last_sync.timestamp() if status.last_sync else None)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
