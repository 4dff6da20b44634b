"""The worker loop: claim, hold a lease, generate, finish or retry; and a supervisor for N of them.

Only the claim and the finish touch the database; generation runs outside any transaction. A
heartbeat thread renews the lease of the jobs a worker holds, so a job whose worker dies (SIGKILL,
power loss) becomes claimable again once its lease expires, and any worker returns it to the queue.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, close_old_connections, connections, transaction

from queueing.generators import GenerationResult, Generator, check_media_path, get_generator
from queueing.models import GenerationQueue

logger = logging.getLogger("queueing.worker")

# Jobs claimed together must all start within this many seconds, or the rest go back to the
# queue for other workers: batching serves throughput on quick jobs, never holds slow ones back.
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


def new_worker_id() -> str:
    """host:pid:random, unique across machines and restarts."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat(threading.Thread):
    """Renews the lease of the jobs the worker holds, every third of the lease, on its own connection."""

    def __init__(self, *, worker_id: str, lease_seconds: float) -> None:
        super().__init__(name="lease-heartbeat", daemon=True)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = max(0.05, lease_seconds / 3)
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()

    def hold(self, ids: list[int]) -> None:
        with self._lock:
            self._held.update(ids)

    def drop(self, job_id: int) -> None:
        with self._lock:
            self._held.discard(job_id)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

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
        self.burst = burst
        self.max_jobs = max_jobs
        self.queue_poll = queue_poll
        self.max_batch = max(1, batch if batch is not None else settings.SONGSGEN_CLAIM_BATCH)
        self.lease_seconds = float(lease_seconds if lease_seconds is not None else settings.SONGSGEN_LEASE_SECONDS)
        self.generator = generator if generator is not None else get_generator()
        self.worker_id = worker_id or new_worker_id()
        self.own_process = own_process
        self.log = log or logger.info
        self.processed = 0
        self.batch_size = 1  # grows while jobs are quick (see _adapt_batch)
        self._avg_job_seconds: float | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._last_reclaim = 0.0
        parent = os.environ.get(PARENT_ENV)
        self._parent_pid = int(parent) if parent and parent.isdigit() else None
        self.heartbeat = Heartbeat(worker_id=self.worker_id, lease_seconds=self.lease_seconds)

    # --- lifecycle ------------------------------------------------------------------------------
    def run(self) -> int:
        """Work until stopped, out of --max-jobs, or (with burst) out of ready jobs."""
        if self.own_process:
            self._install_signal_handlers()
            # One persistent connection for the worker's life: close_old_connections() each turn
            # then only drops a connection that broke, instead of reconnecting (and re-applying pragmas).
            for alias in connections:
                connections[alias].settings_dict["CONN_MAX_AGE"] = None
        self.heartbeat.start()
        self.log(f"Worker {self.worker_id} started (lease {self.lease_seconds:g}s, batch up to {self.max_batch}).")
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
        claimed = last_settle = time.monotonic()
        outcomes: list[Outcome] = []
        for index, job in enumerate(jobs):
            if index and (self._stopping or time.monotonic() - claimed > FAIR_WINDOW):
                self.settle(outcomes)
                outcomes = []
                self._release(jobs[index:])
                break
            outcomes.append(self.generate(job))
            # Quick jobs are recorded together, in one transaction; a slow one at once.
            if time.monotonic() - last_settle > SETTLE_WINDOW:
                self.settle(outcomes)
                outcomes = []
                last_settle = time.monotonic()
        self.settle(outcomes)
        return len(jobs)

    def process(self, job: GenerationQueue) -> None:
        """Generate one claimed job's song and record the outcome."""
        self.settle([self.generate(job)])

    def generate(self, job: GenerationQueue) -> Outcome:
        """Run the generator for a job, outside any transaction; a failure is the job's, not the worker's."""
        started = time.monotonic()
        try:
            result = self.generator.generate(job.song)
            if not isinstance(result, GenerationResult):
                raise TypeError(f"{type(self.generator).__name__}.generate() returned {result!r}, "
                                "not a GenerationResult.")
            check_media_path(result.audio_path)  # a path that would leave the media root fails the attempt
        except Exception as exc:
            logger.warning("Job %s failed: %s", job.pk, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            return Outcome(job, None, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        return Outcome(job, result, "", time.monotonic() - started)

    def settle(self, outcomes: list[Outcome]) -> None:
        """Record finished and failed attempts, all in one transaction (each job and its song together).

        First without a savepoint per job (the common case, and the cheaper one); if one outcome
        cannot be recorded as it stands (an external id already taken, say), the batch is rolled back
        and recorded again job by job, each in a savepoint, that job's attempt failing.
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
            held = {job.pk for job in GenerationQueue.objects.finish_held(worker_id=self.worker_id,
                                                                          finished=finished)}
            for job, *_ in finished:
                if job.pk not in held:
                    logger.warning("Job %s: lease lost to another worker; its outcome was discarded.", job.pk)
            outcomes = [o for o in outcomes if o.result is None]
        for job, result, error, elapsed in outcomes:
            held = True
            if result is not None:
                try:
                    held = job.finish(worker_id=self.worker_id, audio_path=result.audio_path,
                                      generation_time=elapsed, external_id=result.external_id,
                                      savepoint=savepoint)
                except (ValidationError, IntegrityError) as exc:  # e.g. an external id already taken
                    if not savepoint:
                        raise
                    error, result = f"{type(exc).__name__}: {exc}", None
            if result is None:
                held = job.fail_attempt(worker_id=self.worker_id, error=error, savepoint=savepoint)
            if not held:
                logger.warning("Job %s: lease lost to another worker; its outcome was discarded.", job.pk)

    def _adapt_batch(self, seconds: float) -> None:
        """Claim as many jobs at once as fit in FAIR_WINDOW at the recent pace, between 1 and max_batch."""
        avg = seconds if self._avg_job_seconds is None else 0.8 * self._avg_job_seconds + 0.2 * seconds
        self._avg_job_seconds = avg
        self.batch_size = max(1, min(self.max_batch, int(FAIR_WINDOW / max(avg, 1e-6))))

    def _release(self, jobs: list[GenerationQueue]) -> None:
        for job in jobs:
            job.release(worker_id=self.worker_id)
            self.heartbeat.drop(job.pk)
        self.batch_size = 1


class Supervisor:
    """Runs N worker processes (`manage.py runworker --concurrency 1 …`), each with its own connection.

    Each worker runs in its own session so a terminal's Ctrl-C reaches only the supervisor, which
    passes SIGTERM/SIGINT on once (a second one too, for an immediate exit). Without --burst or
    --max-jobs, a worker that dies is started again.
    """

    def __init__(self, *, concurrency: int, worker_args: list[str], log: Callable[[str], None]) -> None:
        self.concurrency = concurrency
        self.worker_args = worker_args
        self.log = log
        self.restart = "--burst" not in worker_args and "--max-jobs" not in worker_args
        self._signals = 0
        self._procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        manage = Path(settings.BASE_DIR) / "manage.py"
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        return subprocess.Popen([sys.executable, str(manage), "runworker", "--concurrency", "1", *self.worker_args],
                                env=env, start_new_session=True)

    def run(self) -> int:
        """Start the workers and wait for them; returns 0 when every worker exited cleanly."""
        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        connections.close_all()  # the supervisor itself needs no connection
        self._procs = [self._spawn() for _ in range(self.concurrency)]
        self.log(f"Started {self.concurrency} worker processes: {', '.join(str(p.pid) for p in self._procs)}.")
        failed = 0
        while self._procs:
            time.sleep(0.2)
            alive = []
            for proc in self._procs:
                code = proc.poll()
                if code is None:
                    alive.append(proc)
                elif code != 0 and self.restart and not self._signals:
                    self.log(f"Worker {proc.pid} exited with {code}; starting another.")
                    time.sleep(1)  # a worker that cannot start at all must not spin
                    alive.append(self._spawn())
                else:
                    failed += code != 0
            self._procs = alive
        return 1 if failed else 0


def worker_args(**options: Any) -> list[str]:
    """Command-line flags for a supervised worker, from the supervisor's own options."""
    args = ["--queue-poll", str(options["queue_poll"]), "--verbosity", str(options.get("verbosity", 1))]
    if options.get("burst"):
        args.append("--burst")
    if options.get("max_jobs") is not None:
        args += ["--max-jobs", str(options["max_jobs"])]
    if options.get("batch") is not None:
        args += ["--batch", str(options["batch"])]
    return args
