"""Where a generation runs: in a child process the worker can kill, so a hung generator frees it.

A thread cannot be stopped; a process (and its group) can.
"""

from __future__ import annotations

import fcntl
import mmap
import multiprocessing
import os
import signal
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, Protocol

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


class Done(NamedTuple):
    """Job `position` of the batch finished: its result or the error that failed it; seconds."""

    position: int  # the job's place in the batch
    result: Any
    error: BaseException | None
    seconds: float


class End(NamedTuple):
    """The batch is over; jobs from `first_unstarted` on were never started."""

    first_unstarted: int


class Runner(Protocol):
    """Generates a batch's songs in order; `next()` calls `tick()` at least every TICK s meanwhile.

    `stop_after_current()` lets no job start after the one in progress (the first job of a batch
    always runs) and returns the index of the first that will not.
    """

    def start(self) -> None: ...
    def submit(self, songs: list[Any], timeouts: list[float]) -> None: ...
    def next(self, tick: Callable[[], None]) -> Done | End: ...
    def stop_after_current(self) -> int: ...
    def current(self) -> tuple[int, float]: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...


class InlineRunner:
    """Calls a generator instance in the worker's own thread (in-process use: tests, embedding).

    Nothing can stop it; a generation that returns after its timeout still counts as timed out, and
    the worker's heartbeat stops renewing its lease at the deadline, so other workers reclaim it.
    """

    def __init__(self, generator: Generator, *, catch_interrupts: bool) -> None:
        self.generator = generator
        # False: KeyboardInterrupt is the embedding process's Ctrl-C
        self.catch_interrupts = catch_interrupts
        self._songs: list[Any] = []
        self._timeouts: list[float] = []
        self._next = self._limit = 0
        self._current = (-1, 0.0)

    def start(self) -> None:
        pass

    def submit(self, songs: list[Any], timeouts: list[float]) -> None:
        self._songs, self._timeouts, self._next, self._limit = songs, timeouts, 0, len(songs)

    def next(self, tick: Callable[[], None]) -> Done | End:
        index = self._next
        if index >= self._limit:
            return End(index)
        self._next += 1
        self._current = (index, time.monotonic())
        tick()  # the worker sees the job begin: its lease is renewed only until its deadline
        started = time.monotonic()
        error: BaseException | None = None
        try:
            result = self.generator.generate(self._songs[index])
        except (KeyboardInterrupt, SystemExit) as exc:
            if not self.catch_interrupts:
                raise
            result, error = None, GenerationFailed(type(exc).__name__, str(exc), interrupt=True)
        except Exception as exc:
            result, error = None, exc
        seconds = time.monotonic() - started
        if error is None and seconds > self._timeouts[index]:
            result, error = None, GenerationTimeout(self._timeouts[index])
        return Done(index, result, error, seconds)

    def stop_after_current(self) -> int:
        self._limit = max(self._next, 1)
        return self._limit

    def current(self) -> tuple[int, float]:
        return self._current

    def kill(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _Turn:
    """Which job of its batch the generator process is on, and up to which it may go.

    A 24-byte file both processes map, read and written under flock: the process takes job j only
    while j < limit, and the worker sets the limit just past the job in progress, so a job is either
    started by the process or released by the worker, never both.
    """

    # limit, current job (-1: none yet), when it started (time.monotonic)
    LAYOUT = struct.Struct("qqd")

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.map = mmap.mmap(self.fd, self.LAYOUT.size)

    @classmethod
    def create(cls) -> tuple[_Turn, str]:
        fd, path = tempfile.mkstemp(prefix="songsgen-turn-")
        os.ftruncate(fd, cls.LAYOUT.size)
        os.close(fd)
        return cls(path), path

    def _read(self) -> tuple[int, int, float]:
        return self.LAYOUT.unpack_from(self.map)

    def reset(self, limit: int) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.LAYOUT.pack_into(self.map, 0, limit, -1, 0.0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def begin(self, index: int) -> bool:
        """In the generator process: take job `index`, unless the worker stopped the batch first."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            limit, _, _ = self._read()
            if index >= limit:
                return False
            self.LAYOUT.pack_into(self.map, 0, limit, index, time.monotonic())
            return True
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def stop_after_current(self) -> int:
        """In the worker: no job starts after the one in progress; returns the first that won't."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            limit, current, started = self._read()
            first = min(limit, max(current + 1, 1))  # the first job of a batch always runs
            self.LAYOUT.pack_into(self.map, 0, first, current, started)
            return first
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def current(self) -> tuple[int, float]:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            _, current, started = self._read()
            return current, started
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class ProcessRunner:
    """Runs the generator named by a dotted path in a child process, started again after a kill."""

    def __init__(self, generator_path: str) -> None:
        self.generator_path = generator_path
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._turn: _Turn | None = None
        self._timeouts: list[float] = []
        self._reported = -1  # the last job whose outcome next() returned
        self._ended: int | None = None  # set when the process died mid-batch: the batch's End
        self._last_turn = (-1, 0.0)

    def start(self) -> None:
        """Start the generator process unless it runs; GeneratorUnavailable if it can't start."""
        if self._proc is not None and self._proc.is_alive():
            return
        self.kill()
        try:
            turn, path = _Turn.create()
        except OSError as exc:
            raise GeneratorUnavailable(f"the generator process's turn file cannot be made ({exc})") from exc
        # a fresh interpreter: no inherited connections or threads
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        proc = context.Process(target=host_main, args=(theirs, self.generator_path, path, os.getpid()),
                               name="songsgen-generator")
        proc.start()
        theirs.close()
        self._proc, self._conn, self._turn = proc, ours, turn
        try:
            reply = ours.recv() if ours.poll(START_TIMEOUT) else ("failed", f"not ready after {START_TIMEOUT:g} s")
        except EOFError:
            reply = ("failed", "its process exited while starting")
        finally:
            os.unlink(path)  # both have it open by now (or the process is gone)
        if reply[0] != "ready":
            self.kill()
            raise GeneratorUnavailable(
                f"SONGSGEN_GENERATOR={self.generator_path!r} could not be started: {reply[1]}"
            )

    def submit(self, songs: list[Any], timeouts: list[float]) -> None:
        """Send a batch as field values, not pickled instances (from_db rebuilds them cheaper)."""
        if not songs:
            return
        meta = songs[0]._meta
        request = (meta.label, songs[0]._state.db,
                   [[getattr(song, field.attname) for field in meta.concrete_fields] for song in songs])
        self.start()
        self._timeouts, self._reported, self._ended = timeouts, -1, None
        self._turn.reset(len(songs))  # type: ignore[union-attr]
        try:
            self._conn.send(request)  # type: ignore[union-attr]
        except OSError:  # the idle process died (killed from outside): a fresh one takes the batch
            self.kill()
            self.start()
            self._turn.reset(len(songs))  # type: ignore[union-attr]
            self._conn.send(request)  # type: ignore[union-attr]

    def next(self, tick: Callable[[], None]) -> Done | End:
        """The batch's next outcome, in order, or its End; a hang past its timeout is killed."""
        if self._ended is not None:
            return End(self._ended)
        conn = self._conn
        assert conn is not None
        while True:
            if conn.poll(TICK):
                try:
                    message = conn.recv()
                except EOFError:
                    return self._died(f"GeneratorCrashed: the generator process {self._exit_status()}.")
                if message[0] == "end":
                    return End(message[1])
                _, index, ok, payload, seconds = message
                self._reported = index
                if ok:
                    return Done(index, payload, None, seconds)
                kind, text, interrupt, details = payload
                return Done(index, None, GenerationFailed(kind, text, interrupt=interrupt, details=details), seconds)
            index, started = self.current()
            if index > self._reported and time.monotonic() - started > self._timeouts[index]:
                self.kill()
                return self._died(GenerationTimeout(self._timeouts[index]))
            try:
                tick()
            except BaseException:
                # the worker is failing: no generation may outlive it, nor answer a later batch
                self.kill()
                raise

    def _died(self, error: str | GenerationError) -> Done | End:
        """The process is gone mid-batch: its current job failed; the later ones never began."""
        index, started = self._last_turn
        self._ended = index + 1
        if index <= self._reported:  # it died between jobs
            return End(self._ended)
        failure = error if isinstance(error, GenerationError) else GenerationError(error)
        return Done(index, None, failure, time.monotonic() - started)

    def stop_after_current(self) -> int:
        if self._ended is not None:
            return self._ended
        return self._turn.stop_after_current() if self._turn is not None else 0

    def current(self) -> tuple[int, float]:
        """The job the process is on (-1: none yet) and when it started it."""
        if self._turn is not None:
            self._last_turn = self._turn.current()
        return self._last_turn

    def _exit_status(self) -> str:
        """How the generator process ended (it closed its end of the pipe), once it has."""
        proc = self._proc
        self.current()  # the job it was on, read before the turn is closed
        if proc is not None:
            proc.join(2)
        self.kill()
        code = proc.exitcode if proc is not None else None
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def kill(self) -> None:
        """Kill the generator process and the process group it leads (what the generator began)."""
        if self._turn is not None:
            self._last_turn = self._turn.current()
            self._turn.close()
        proc, conn = self._proc, self._conn
        self._proc = self._conn = self._turn = None
        if conn is not None:
            conn.close()
        if proc is None:
            return
        if proc.is_alive():
            try:
                if proc.pid is None:
                    raise OSError("not started")
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:  # not yet the leader of its own group
                proc.kill()
        proc.join(10)

    def stop(self) -> None:
        """Let the generator process exit (it is idle between batches), or kill it if it won't."""
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5)
            except OSError:
                pass
        self.kill()


def _exit_with_orphan(parent_pid: int) -> None:
    """Kill this process group once the worker is gone (SIGKILL, a second signal): no orphans."""
    while True:
        time.sleep(ORPHAN_CHECK)
        if os.getppid() != parent_pid:
            os.killpg(0, signal.SIGKILL)


def host_main(conn: Connection, generator_path: str, turn_path: str, parent_pid: int) -> None:
    """The generator process: set up Django, make the generator, then generate each batch sent."""
    # its own group: a terminal's Ctrl-C is not for it, and the worker can kill the group
    os.setpgid(0, 0)
    # The worker decides what a signal means for the job in hand (it finishes it);
    # the generation goes on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_orphan, args=(parent_pid,), name="orphan-check", daemon=True).start()
    try:
        turn = _Turn(turn_path)
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
            request = conn.recv()
        except EOFError:  # the worker went away
            return
        if request is None:
            return
        label, using, rows = request
        model = apps.get_model(label)
        first_unstarted = len(rows)
        for index, values in enumerate(rows):
            if not turn.begin(index):
                first_unstarted = index
                break
            song = model.from_db(using, None, values)
            started = time.monotonic()
            payload: Any
            try:
                ok, payload = True, generator.generate(song)
            except BaseException as exc:  # noqa: B036
                # a generator's KeyboardInterrupt/SystemExit fails its attempt
                ok, payload = False, (type(exc).__name__, str(exc), isinstance(exc, KeyboardInterrupt | SystemExit),
                                      traceback.format_exc())
            seconds = time.monotonic() - started
            try:
                conn.send(("done", index, ok, payload, seconds))
            except Exception as exc:  # a result that cannot be pickled
                failure = ("TypeError", f"the generator's result cannot be sent to the worker ({exc})", False, "")
                conn.send(("done", index, False, failure, seconds))
        conn.send(("end", first_unstarted))
        close_old_connections()
