"""Where a generation runs: in a child process the worker can kill, so a hung generator frees it.

A thread cannot be stopped, and one stuck in C code holding the GIL stops its whole process; a
process can always be killed. The generator process is started once and serves job after job (a
round trip on a pipe each); a generation that outlives its timeout is killed with the process
group it leads (so whatever it started goes too), and a fresh process is started for the next job.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from queueing.generators import Generator, get_generator

# How often the worker gets control back while it waits for a generation (to release its batch).
TICK = 0.05
# A generator process not ready by then (importing, connecting) counts as one that cannot start.
START_TIMEOUT = 120.0
# How often the generator process checks that its worker still lives.
ORPHAN_CHECK = 0.5


class GenerationError(Exception):
    """A generation failed; str() is the message stored in the job's error_message."""


class GenerationFailed(GenerationError):
    """The generator raised; `interrupt` when it was KeyboardInterrupt or SystemExit."""

    def __init__(self, kind: str, message: str, *, interrupt: bool = False, details: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.interrupt = interrupt
        self.details = details


class GenerationTimeout(GenerationError):
    """The generation ran past its timeout and was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"TimeoutError: generation timed out after {seconds:g} s and was stopped.")


class GeneratorUnavailable(Exception):
    """The generator process cannot be started: a problem of the worker's set-up, not of a job."""


class Runner(Protocol):
    """Runs `generate(song)` for the worker: `tick()` is called while it waits, at least every TICK s."""

    def start(self) -> None: ...
    def generate(self, song: Any, *, timeout: float, tick: Callable[[], None]) -> Any: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...


class InlineRunner:
    """Calls a generator instance in the worker's own thread (in-process use: tests, embedding).

    Nothing can stop it; a generation that returns after its timeout still counts as timed out, and
    the worker's heartbeat stops renewing its lease at the deadline, so other workers reclaim it.
    """

    def __init__(self, generator: Generator, *, catch_interrupts: bool) -> None:
        self.generator = generator
        self.catch_interrupts = catch_interrupts  # False: KeyboardInterrupt is the embedding process's Ctrl-C

    def start(self) -> None:
        pass

    def generate(self, song: Any, *, timeout: float, tick: Callable[[], None]) -> Any:
        started = time.monotonic()
        try:
            result = self.generator.generate(song)
        except (KeyboardInterrupt, SystemExit) as exc:
            if not self.catch_interrupts:
                raise
            raise GenerationFailed(type(exc).__name__, str(exc), interrupt=True) from exc
        if time.monotonic() - started > timeout:
            raise GenerationTimeout(timeout)
        return result

    def kill(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ProcessRunner:
    """Runs the generator named by a dotted path in a child process, restarted after a kill."""

    def __init__(self, generator_path: str) -> None:
        self.generator_path = generator_path
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the generator process unless it runs; GeneratorUnavailable if it cannot be made ready."""
        if self._proc is not None and self._proc.is_alive():
            return
        self.kill()
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited connections or threads
        ours, theirs = context.Pipe()
        proc = context.Process(target=host_main, args=(theirs, self.generator_path, os.getpid()),
                               name="songsgen-generator")
        proc.start()
        theirs.close()
        self._proc, self._conn = proc, ours
        try:
            reply = ours.recv() if ours.poll(START_TIMEOUT) else ("failed", f"not ready after {START_TIMEOUT:g} s")
        except EOFError:
            reply = ("failed", "its process exited while starting")
        if reply[0] != "ready":
            self.kill()
            raise GeneratorUnavailable(
                f"SONGSGEN_GENERATOR={self.generator_path!r} could not be started: {reply[1]}"
            )

    def generate(self, song: Any, *, timeout: float, tick: Callable[[], None]) -> Any:
        """The generator's result for `song`; GenerationError if it raised, died or ran out of time."""
        meta = song._meta
        # The song's field values, not a pickled instance: the model rebuilds it from them (from_db),
        # an order of magnitude cheaper per job.
        message = (meta.label, [getattr(song, field.attname) for field in meta.concrete_fields], song._state.db)
        self.start()
        try:
            self._conn.send(message)  # type: ignore[union-attr]
        except OSError:  # the idle process died (killed from outside): a fresh one takes the job
            self.kill()
            self.start()
            self._conn.send(message)  # type: ignore[union-attr]
        conn = self._conn
        assert conn is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise GenerationTimeout(timeout)
            if conn.poll(min(left, TICK)):
                try:
                    reply = conn.recv()
                except EOFError:
                    raise GenerationError(f"GeneratorCrashed: the generator process {self._exit_status()}.") from None
                break
            try:
                tick()
            except BaseException:
                self.kill()  # the worker is failing: no generation may outlive it, nor answer a later job
                raise
        if reply[0] == "ok":
            return reply[1]
        _, kind, message, interrupt, details = reply
        raise GenerationFailed(kind, message, interrupt=interrupt, details=details)

    def _exit_status(self) -> str:
        proc = self._proc
        self.kill()
        code = proc.exitcode if proc is not None else None
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def kill(self) -> None:
        """Kill the generator process and the process group it leads (what the generator started)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is None:
            return
        if proc.is_alive():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:  # not yet the leader of its own group
                proc.kill()
        proc.join(10)

    def stop(self) -> None:
        """Let the generator process exit (it is idle between jobs), or kill it if it does not."""
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5)
            except OSError:
                pass
        self.kill()


def _exit_with_orphan(parent_pid: int) -> None:
    """Kill this process group once the worker is gone (SIGKILL, a second signal): no orphan generates on."""
    while True:
        time.sleep(ORPHAN_CHECK)
        if os.getppid() != parent_pid:
            os.killpg(0, signal.SIGKILL)


def host_main(conn: Connection, generator_path: str, parent_pid: int) -> None:
    """The generator process: set up Django, make the generator, then generate each song it is sent."""
    os.setpgid(0, 0)  # its own group: a terminal's Ctrl-C is not for it, and the worker can kill the group
    # The worker decides what a signal means for the job in hand (it finishes it); the generation goes on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_orphan, args=(parent_pid,), name="orphan-check", daemon=True).start()
    try:
        import django

        django.setup()
        from django.apps import apps
        from django.db import close_old_connections

        generator = get_generator(generator_path)
    except BaseException as exc:  # noqa: B036 - reported to the worker, whatever it was
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the worker went away
            return
        if message is None:
            return
        label, values, using = message
        song = apps.get_model(label).from_db(using, None, values)
        try:
            reply: tuple[Any, ...] = ("ok", generator.generate(song))
        except BaseException as exc:  # noqa: B036 - a generator's KeyboardInterrupt/SystemExit fails its attempt
            reply = ("error", type(exc).__name__, str(exc), isinstance(exc, KeyboardInterrupt | SystemExit),
                     traceback.format_exc())
        try:
            conn.send(reply)
        except Exception as exc:  # a result that cannot be pickled
            conn.send(("error", "TypeError", f"the generator's result cannot be sent to the worker ({exc})",
                       False, ""))
        close_old_connections()
