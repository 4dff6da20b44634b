"""The supervisor of `runworker --concurrency N`: N workers, signals passed on, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.db import connections

from queueing.worker import PARENT_ENV


class Supervisor:
    """Runs N worker processes (`manage.py runworker --concurrency 1 …`), a connection each.

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
        self._told: set[int] = set()  # workers already sent our SIGTERM (a second one means "exit now")

    def _spawn(self) -> subprocess.Popen[bytes]:
        manage = Path(settings.BASE_DIR) / "manage.py"
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        return subprocess.Popen([sys.executable, str(manage), "runworker", "--concurrency", "1", *self.worker_args],
                                env=env, start_new_session=True)

    def _stop_late(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM the workers started after a stop was asked, once each."""
        for proc in procs:
            if proc.poll() is None and proc.pid not in self._told:
                proc.send_signal(signal.SIGTERM)
                self._told.add(proc.pid)

    def run(self) -> int:
        """Start the workers and wait for them; returns 0 when every worker exited cleanly."""
        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            for proc in self._procs:
                if proc.poll() is None:
                    # SIGTERM whichever came: a worker treats both alike once started, and one still starting
                    # (no handler yet) then ends quietly instead of with a KeyboardInterrupt traceback.
                    proc.send_signal(signal.SIGTERM)
                    self._told.add(proc.pid)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        connections.close_all()  # the supervisor itself needs no connection
        self._procs = []
        for _ in range(self.concurrency):  # one by one: a signal during the spawn reaches those already started
            self._procs.append(self._spawn())
        if self._signals:  # it came before some of them existed: they are told now
            self._stop_late(self._procs)
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
                    if not self._signals:  # a stop asked during that second: no new worker
                        alive.append(self._spawn())
                else:  # a worker our SIGTERM ended before it could handle it stopped as asked
                    failed += code not in (0, -signal.SIGTERM) or (code != 0 and not self._signals)
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
