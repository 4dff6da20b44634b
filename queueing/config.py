"""The worker's settings, checked once at start: a value out of range is refused before any claim.

A lease shorter than a renewal lets a second worker run the same job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DAY = 86_400.0
# A lease must outlast a renewal held up by a busy database and a pause of the worker.
MIN_LEASE = 3.0
MIN_HEARTBEAT = 0.1
MAX_CLAIM_BATCH = 1000  # the finishing UPDATE names every job of a batch in one IN (…)
MAX_GENERATION_TIMEOUT = DAY


@dataclass(frozen=True)
class WorkerConfig:
    """The validated worker settings (seconds, except the batch)."""

    lease_seconds: float
    heartbeat_seconds: float
    generation_timeout: float
    claim_batch: int
    backoff_seconds: float
    backoff_max_seconds: float


def _seconds(name: str, value: object, low: float, high: float, rule: str = "") -> float:
    """`value` as seconds within [low, high], or ImproperlyConfigured naming variable and range."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not low <= seconds <= high:  # NaN fails too
        raise ImproperlyConfigured(
            f"{name} must be between {low:g} and {high:g} seconds{rule}, got {value!r}."
        )
    return seconds


def worker_config(*, lease_seconds: float | None = None, claim_batch: int | None = None) -> WorkerConfig:
    """Read and check the worker settings (SONGSGEN_*); the keyword arguments override them."""
    lease = _seconds("SONGSGEN_LEASE_SECONDS",
                     settings.SONGSGEN_LEASE_SECONDS if lease_seconds is None else lease_seconds, MIN_LEASE, DAY)
    heartbeat = getattr(settings, "SONGSGEN_HEARTBEAT_SECONDS", None)
    if heartbeat is None:
        heartbeat = lease / 3
    heartbeat = _seconds("SONGSGEN_HEARTBEAT_SECONDS", heartbeat, MIN_HEARTBEAT, lease / 2,
                         " (at most half of SONGSGEN_LEASE_SECONDS)")
    timeout = _seconds("SONGSGEN_GENERATION_TIMEOUT", settings.SONGSGEN_GENERATION_TIMEOUT, 1,
                       MAX_GENERATION_TIMEOUT)
    batch = settings.SONGSGEN_CLAIM_BATCH if claim_batch is None else claim_batch
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_CLAIM_BATCH:
        name = "SONGSGEN_CLAIM_BATCH" if claim_batch is None else "--batch"
        raise ImproperlyConfigured(f"{name} must be a whole number between 1 and {MAX_CLAIM_BATCH}, got {batch!r}.")
    backoff = _seconds("SONGSGEN_RETRY_BACKOFF_SECONDS", settings.SONGSGEN_RETRY_BACKOFF_SECONDS, 0, DAY)
    backoff_max = _seconds("SONGSGEN_RETRY_BACKOFF_MAX_SECONDS", settings.SONGSGEN_RETRY_BACKOFF_MAX_SECONDS,
                           backoff, 7 * DAY, " (at least SONGSGEN_RETRY_BACKOFF_SECONDS)")
    return WorkerConfig(lease_seconds=lease, heartbeat_seconds=heartbeat, generation_timeout=timeout,
                        claim_batch=batch, backoff_seconds=backoff, backoff_max_seconds=backoff_max)
