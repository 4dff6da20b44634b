"""The read replicas' part of /health and /metrics: each one's lag and whether reads may go to it."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from health_check.exceptions import ServiceUnavailable
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from songsgen.db import replicas
from songsgen.monitoring.checks import SongsgenCheck, duration, names
from songsgen.monitoring.metrics import ProbeResults


class ReplicaCheck(SongsgenCheck):
    """Every read replica answers and is at most SONGSGEN_REPLICA_MAX_LAG_SECONDS behind (none configured: passes)."""

    name = "replicas"

    def __repr__(self) -> str:
        return "replicas" if replicas.aliases() else "replicas (none configured)"

    def check(self, connection: BaseDatabaseWrapper) -> None:
        limit = float(settings.READ_REPLICA_MAX_LAG_SECONDS)
        failing = []
        for alias in replicas.aliases():
            state = replicas.health.record(replicas.probe(alias))  # a fresh look, shared with the router
            if not state.answered:
                failing.append(f"{alias} {state.problem}")
            elif state.problem:
                lag = state.lag_seconds
                failing.append(f"{alias} is {duration(lag, beside=limit)} behind (limit {duration(limit)})"
                               if lag is not None and lag > limit else f"{alias} {state.problem}")
        if failing:
            raise ServiceUnavailable(f"{names(failing)}: reads go to the primary meanwhile (docs/postgres.md, "
                                     "\"Read replicas\").")


def _look(alias: str) -> replicas.ReplicaState:
    return replicas.health.record(replicas.probe(alias))


def replica_metrics(connection: BaseDatabaseWrapper, results: ProbeResults) -> Iterator[Metric]:
    """songsgen_replica_lag_seconds, _up and _usable per replica (nothing without replicas)."""
    if not replicas.aliases():
        return
    lag = GaugeMetricFamily("songsgen_replica_lag_seconds", "How far the read replica's replay is behind the "
                            "primary (absent while it does not answer).", labels=["replica"])
    up = GaugeMetricFamily("songsgen_replica_up", "1 when the read replica answered.", labels=["replica"])
    usable = GaugeMetricFamily("songsgen_replica_usable", "1 when reads may go to the replica (answering, a "
                               "standby, at most SONGSGEN_REPLICA_MAX_LAG_SECONDS behind).", labels=["replica"])
    for alias in replicas.aliases():
        state = results.run(f"replica_{alias}", functools.partial(_look, alias))
        if state is None:
            continue
        up.add_metric([alias], 1.0 if state.answered else 0.0)
        usable.add_metric([alias], 1.0 if state.usable else 0.0)
        if state.lag_seconds is not None:
            lag.add_metric([alias], state.lag_seconds)
    yield from (lag, up, usable)
