"""The worker loop: claim, hold a lease, generate, finish or retry.

Only the claim and the finish touch the database; an expired lease frees a dead worker's job.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, close_old_connections, connections, transaction

from queueing.config import worker_config
from queueing.generation import (
    Done,
    End,
    GenerationError,
    GenerationFailed,
    GeneratorUnavailable,
    InlineRunner,
    ProcessRunner,
    Runner,
)
from queueing.generators import GenerationResult, Generator, check_result
from queueing.models import GenerationQueue, song_model

logger = logging.getLogger("queueing.worker")

# Jobs claimed together must all start within this many seconds, or the rest go back to the queue
# for other workers (at once, even while a job of the batch still generates): batching serves
# throughput on quick jobs, never holds slow ones back.
FAIR_WINDOW = 0.2
# Outcomes of quick jobs are written together once this many seconds have passed (group commit).
SETTLE_WINDOW = 0.05
# How often a worker looks for jobs whose lease expired (a cheap indexed read when there are none).
RECLAIM_INTERVAL = 1.0
# Environment variable naming the supervisor's pid, set for the worker processes it starts.
PARENT_ENV = "SONGSGEN_WORKER_PARENT"


class Outcome(NamedTuple):
    """One attempt: the result, or the error that failed it, and how long generation took."""

    job: GenerationQueue
    result: GenerationResult | None
    error: str
    seconds: float


class _WorkerFailed(Exception):
    """Recording or releasing failed while a generation ran: raised again as the worker's error."""


@dataclass
class Batch:
    """One claim's jobs, their timeouts, the outcomes not yet recorded; jobs[end:] were released."""

    jobs: list[GenerationQueue]
    timeouts: list[float]
    claimed: float
    last_settle: float
    outcomes: list[Outcome] = field(default_factory=list)
    end: int = 0
    stopped: bool = False  # no job starts after the one in progress

    def __post_init__(self) -> None:
        self.end = len(self.jobs)


def new_worker_id() -> str:
    """host:pid:random, unique across machines and restarts."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat(threading.Thread):
    """Renews the lease of the jobs the worker holds, every `interval` s, on its own connection.

    A job past its generation deadline is no longer renewed: should the worker itself be stuck, its
    lease runs out and another worker reclaims the job.
    """

    def __init__(self, *, worker_id: str, lease_seconds: float, interval: float) -> None:
        super().__init__(name="lease-heartbeat", daemon=True)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = interval
        # job id -> generation deadline (monotonic), once started
        self._held: dict[int, float | None] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()

    def hold(self, ids: list[int]) -> None:
        with self._lock:
            self._held.update(dict.fromkeys(ids))

    def generating(self, job_id: int, deadline: float) -> None:
        with self._lock:
            if job_id in self._held:
                self._held[job_id] = deadline

    def drop(self, job_id: int) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def held(self) -> list[int]:
        """The jobs to renew: held, and not past their generation deadline."""
        now = time.monotonic()
        with self._lock:
            return sorted(pk for pk, deadline in self._held.items() if deadline is None or deadline > now)

    def run(self) -> None:
        try:
            while not self._done.wait(self.interval):
                ids = self.held()
                if not ids:
                    continue
                try:
                    close_old_connections()
                    GenerationQueue.objects.renew_leases(
                        worker_id=self.worker_id, ids=ids, lease_seconds=self.lease_seconds
                    )
                except Exception:  # keep beating: the next renewal may succeed within the lease
                    logger.exception("Lease renewal failed for jobs %s", ids)
        finally:
            connections.close_all()  # this thread's own connections

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout=10)


class Worker:
    """One worker: a loop on one persistent database connection. `run()` returns the jobs processed.

    Without `generator`, generations run in a generator process (SONGSGEN_GENERATOR) that is killed
    when one outlives its timeout; a generator instance runs in this thread (tests), unstoppable.
    `own_process=False` runs it inside someone else's process (tests): no signal handlers, and the
    caller's connection and transaction are left as they are.
    """

    def __init__(
        self,
        *,
        burst: bool = False,
        max_jobs: int | None = None,
        queue_poll: float = 1.0,
        batch: int | None = None,
        lease_seconds: float | None = None,
        generator: Generator | None = None,
        worker_id: str | None = None,
        own_process: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        # before anything is claimed
        self.config = worker_config(lease_seconds=lease_seconds, claim_batch=batch)
        self.burst = burst
        self.max_jobs = max_jobs
        self.queue_poll = queue_poll
        self.max_batch = self.config.claim_batch
        self.lease_seconds = self.config.lease_seconds
        self.runner: Runner = (ProcessRunner(settings.SONGSGEN_GENERATOR) if generator is None
                               else InlineRunner(generator, catch_interrupts=own_process))
        self.worker_id = worker_id or new_worker_id()
        self.own_process = own_process
        self.log = log or logger.info
        self.processed = 0
        self.batch_size = 1  # grows while jobs are quick (see _adapt_batch)
        self._avg_job_seconds: float | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._last_reclaim = 0.0
        self._batch: Batch | None = None
        parent = os.environ.get(PARENT_ENV)
        self._parent_pid = int(parent) if parent and parent.isdigit() else None
        self.heartbeat = Heartbeat(worker_id=self.worker_id, lease_seconds=self.lease_seconds,
                                   interval=self.config.heartbeat_seconds)

    # --- lifecycle ------------------------------------------------------------------------------
    def run(self) -> int:
        """Work until stopped, out of --max-jobs, or (with burst) out of ready jobs."""
        if self.own_process:
            self._install_signal_handlers()
            # One persistent connection for the worker's life: close_old_connections() each
            # turn then only drops a connection that broke, instead of reconnecting (and
            # re-applying pragmas).
            for alias in connections:
                connections[alias].settings_dict["CONN_MAX_AGE"] = None
        self.runner.start()  # GeneratorUnavailable here, before any claim
        self.heartbeat.start()
        self.log(f"Worker {self.worker_id} started (lease {self.lease_seconds:g}s, batch up to {self.max_batch}, "
                 f"generation timeout {self.config.generation_timeout:g}s).")
        try:
            while not self._stopping:
                if self.own_process:
                    close_old_connections()
                if self._parent_pid is not None and os.getppid() != self._parent_pid:
                    self.log("Supervisor gone; stopping.")
                    break
                if self.max_jobs is not None and self.processed >= self.max_jobs:
                    break
                self._maybe_reclaim()
                if self.run_once():
                    continue
                # Nothing ready: maybe a lease just ran out.
                if self.reclaim():
                    continue
                if self.burst:
                    break
                self._wake.wait(self.queue_poll)
                self._wake.clear()
        finally:
            self.heartbeat.stop()
            self.runner.stop()
            if self.own_process:
                connections.close_all()
        self.log(f"Worker {self.worker_id} stopped after {self.processed} job(s).")
        return self.processed

    def stop(self) -> None:
        """Stop claiming; the job in hand is finished, the rest of a batch released."""
        self._stopping = True
        self._wake.set()

    def _install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self._stopping:
                # Second signal: leave at once. The leases cover whatever was in flight.
                self.runner.kill()
                os._exit(128 + signum)
            self.log(f"Received {signal.Signals(signum).name}; finishing the current job, then exiting.")
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        # A worker started in the background by a shell (`make run`) inherits SIGINT ignored: the
        # terminal's Ctrl-C is for the foreground process, and the shell's trap sends us SIGTERM.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, handler)

    def _maybe_reclaim(self) -> None:
        if time.monotonic() - self._last_reclaim >= RECLAIM_INTERVAL:
            self.reclaim()

    def reclaim(self) -> int:
        """Return jobs of dead workers (expired leases) to the queue."""
        self._last_reclaim = time.monotonic()
        reclaimed = GenerationQueue.objects.reclaim_expired()
        if reclaimed:
            self.log(f"Returned {reclaimed} job(s) with an expired lease to the queue.")
        return reclaimed

    # --- one turn -------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim a batch and work through it; returns how many jobs were claimed."""
        limit = self.batch_size
        if self.max_jobs is not None:
            limit = min(limit, self.max_jobs - self.processed)
        jobs = GenerationQueue.objects.claim(worker_id=self.worker_id, lease_seconds=self.lease_seconds,
                                             limit=limit)
        if not jobs:
            return 0
        self.heartbeat.hold([job.pk for job in jobs])
        now = time.monotonic()
        batch = self._batch = Batch(jobs=jobs, timeouts=[float(job.timeout_seconds or self.config.generation_timeout)
                                                         for job in jobs], claimed=now, last_settle=now)
        try:
            self.runner.submit([job.song for job in jobs], batch.timeouts)
        except GeneratorUnavailable:
            self._batch = None
            self._release(jobs)
            raise
        try:
            while not isinstance(event := self.runner.next(self._tick_between), End):
                outcome = self._outcome(jobs[event.position], event)
                if outcome is None:  # interrupted by the worker's own signal: not an attempt
                    self._release([jobs[event.position]])
                else:
                    batch.outcomes.append(outcome)
                self._tick()
        finally:
            self._batch = None
        self.settle(batch.outcomes)
        # never started: after a timeout, a crash
        self._release(jobs[event.first_unstarted:batch.end])
        return len(jobs)

    def _tick(self) -> None:
        """Between jobs and during one: record quick outcomes, release jobs whose turn is late."""
        batch = self._batch
        if batch is None:
            return
        now = time.monotonic()
        # Quick jobs are recorded together, in one transaction; a slow one at once.
        if batch.outcomes and now - batch.last_settle > SETTLE_WINDOW:
            outcomes, batch.outcomes = batch.outcomes, []
            self.settle(outcomes)
            batch.last_settle = time.monotonic()
        if not batch.stopped and (self._stopping or now - batch.claimed > FAIR_WINDOW):
            batch.stopped = True
            first = self.runner.stop_after_current()
            self._release(batch.jobs[first:batch.end])
            batch.end = first

    def _tick_between(self) -> None:
        """While a generation runs: _tick; no lease renewal for the running job past deadline."""
        try:
            self._tick()
            batch = self._batch
            index, started = self.runner.current()
            if batch is not None and index >= 0:
                self.heartbeat.generating(batch.jobs[index].pk, started + batch.timeouts[index])
        except Exception as exc:
            raise _WorkerFailed from exc

    def _outcome(self, job: GenerationQueue, done: Done) -> Outcome | None:
        """The attempt's outcome: the result if the song's fields accept it, or the failing error.

        None when the generator was interrupted (KeyboardInterrupt, SystemExit) because this worker
        itself was signalled: the job goes back untouched, as the rest of a stopping worker's batch.
        """
        exc = done.error
        if exc is None:
            try:
                return Outcome(job, check_result(job.song, done.result), "", done.seconds)
            except Exception as invalid:
                exc = invalid
        if isinstance(exc, GenerationFailed) and exc.interrupt and self._stopping:
            return None
        error = str(exc) if isinstance(exc, GenerationError) else f"{type(exc).__name__}: {exc}"
        logger.warning("Job %s failed: %s", job.pk, error)
        if isinstance(exc, GenerationFailed) and exc.details:
            logger.debug("Job %s: the generator's traceback:\n%s", job.pk, exc.details)
        elif not isinstance(exc, GenerationError):
            logger.debug("Job %s failed:", job.pk, exc_info=exc)
        return Outcome(job, None, error, done.seconds)

    def settle(self, outcomes: list[Outcome]) -> None:
        """Record finished and failed attempts in one transaction (each job with its song).

        First without a savepoint per job (the common case, and the cheaper one); if one outcome
        cannot be recorded as it stands (an external id already taken, say), the batch is rolled
        back and recorded again job by job, each in a savepoint, that job's attempt failing.
        """
        if not outcomes:
            return
        try:
            if all(outcome.result is not None for outcome in outcomes):
                # The common case: finish_held opens the transaction itself, after preparing it.
                self._record(outcomes, savepoint=False)
            else:
                with transaction.atomic():
                    self._record(outcomes, savepoint=False)
        except (ValidationError, IntegrityError):
            for outcome in outcomes:  # the rolled-back pass may have changed them in memory
                outcome.job.refresh_from_db(fields=["status", "retry_count", "max_retries", "worker_id"])
            with transaction.atomic():
                self._record(outcomes, savepoint=True)
        for outcome in outcomes:
            self.heartbeat.drop(outcome.job.pk)
            self.processed += 1
            self._adapt_batch(outcome.seconds)

    def _record(self, outcomes: list[Outcome], *, savepoint: bool) -> None:
        if not savepoint:
            # The common case, in bulk: every generated job in one UPDATE, their songs in one more.
            finished = [(o.job, o.result.audio_path, o.seconds, o.result.external_id)
                        for o in outcomes if o.result is not None]
            kept = {job.pk for job in GenerationQueue.objects.finish_held(worker_id=self.worker_id,
                                                                          finished=finished)}
            for job, *_ in finished:
                if job.pk not in kept:
                    self._lost(job)
            outcomes = [o for o in outcomes if o.result is None]
        for job, result, error, elapsed in outcomes:
            held = True
            if result is not None:
                try:
                    held = job.finish(worker_id=self.worker_id, audio_path=result.audio_path,
                                      generation_time=elapsed, external_id=result.external_id,
                                      savepoint=savepoint)
                except (ValidationError, IntegrityError) as exc:
                    # e.g. an external id already taken
                    if not savepoint:
                        raise
                    error, result = f"{type(exc).__name__}: {exc}", None
            if result is None:
                held = job.fail_attempt(worker_id=self.worker_id, error=error, savepoint=savepoint)
            if not held:
                self._lost(job)

    def _lost(self, job: GenerationQueue) -> None:
        """Say why a job's outcome could not be recorded: what became of the row we held."""
        row = GenerationQueue.objects.filter(pk=job.pk).values("status", "worker_id", "started_at",
                                                               "error_message").first()
        if row is None:
            if song_model()._default_manager.filter(pk=job.song_id).exists():
                why = "the job was deleted (or the database was restored to a point before it existed)"
            else:
                why = (f"its song {job.song_id} was deleted while it was generating (or the database was "
                       "restored to a point before the song existed)")
        elif row["error_message"].startswith(f"Lease expired: worker {self.worker_id} "):
            why = f"this worker's lease expired and the job was reclaimed (it is {row['status']} now)"
        elif row["started_at"] is not None and job.started_at is not None and row["started_at"] > job.started_at:
            why = (f"this worker's lease expired and the job was claimed again since (it is {row['status']} "
                   f"now, held by {row['worker_id'] or 'no worker'})")
        else:
            why = (f"the job is no longer held by this worker (it is {row['status']}, held by "
                   f"{row['worker_id'] or 'no worker'}): the database was restored to an earlier state")
        logger.warning("Job %s: %s; its outcome was discarded.", job.pk, why)

    def _adapt_batch(self, seconds: float) -> None:
        """Claim as many jobs as fit in FAIR_WINDOW at the recent pace, between 1 and max_batch."""
        avg = seconds if self._avg_job_seconds is None else 0.8 * self._avg_job_seconds + 0.2 * seconds
        self._avg_job_seconds = avg
        self.batch_size = max(1, min(self.max_batch, int(FAIR_WINDOW / max(avg, 1e-6))))

    def _release(self, jobs: list[GenerationQueue]) -> None:
        """Give claimed jobs back to the queue untouched, for any worker to take."""
        for job in jobs:
            if not job.release(worker_id=self.worker_id):
                self._lost(job)
            self.heartbeat.drop(job.pk)
        if jobs:
            self.batch_size = 1
