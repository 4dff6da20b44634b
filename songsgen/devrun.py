"""`make run`'s supervisor: the development server, a queue worker and (on SQLite) `replicate`,
started and stopped together.

    python -m songsgen.devrun --port 8000 [--while-exists FILE] [--check]

They run in sessions of their own, so a signal meant for the whole (Ctrl-C in a terminal) reaches
them only through here, in order: SIGTERM, a grace period for the worker to finish its job, then
SIGKILL. It stops on SIGTERM, SIGINT or SIGHUP, when any child exits, and when FILE disappears: GNU
make passes SIGTERM on to a recipe but not SIGINT (it expects the terminal to have sent that to
every process), and on either it deletes the target file its recipe was making; that deletion is
how a `kill -INT` sent to make alone reaches us.

FILE is also the lock of one `make run` per checkout: a second one (`--check`, the recipe's first
step, then the supervisor itself) is refused with the first one's pid and never deletes FILE, which
would stop the first.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO

from songsgen.db.dblock import flock_within

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"
POLL = 0.2  # seconds between looks at the children and the file


def _hold(path: Path) -> IO[str] | str:
    """The lock of one `make run`: FILE opened, locked, our pid in it; or the holder's pid."""
    # held open for the whole run: closing it releases the lock
    handle = open(path, "a+")  # noqa: SIM115
    if not flock_within(handle.fileno(), 0):
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        return holder
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(MANAGE), *args], start_new_session=True)


def _stop(procs: dict[str, subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM each child's process group (runserver's autoreloader runs the server in a child
    of its own), then SIGKILL what is still there after `grace` seconds."""
    for proc in procs.values():
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs.values():
        # the group's leftovers too, even once its leader is gone
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _sqlite() -> bool:
    """Whether settings will name an SQLite database (no DATABASE_URL, or sqlite://): replicate."""
    url = os.environ.get("DATABASE_URL", "").strip().lower()
    return not url or url.startswith("sqlite")


def main(argv: list[str] | None = None) -> int:
    """Run server, worker, replicate until a signal, a child's exit or the file goes; 0 if asked."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--while-exists", type=Path, metavar="FILE",
                        help="Created at start; stop when it is removed (make deletes it when interrupted).")
    parser.add_argument("--grace", type=float, default=10.0, help="Seconds the worker gets to finish (10).")
    parser.add_argument("--check", action="store_true", help="Only say whether another `make run` holds FILE.")
    args = parser.parse_args(argv)
    lock = _hold(args.while_exists) if args.while_exists is not None else None
    if isinstance(lock, str):
        print(f"devrun: `make run` is already running in this checkout (pid {lock}); stop it first (Ctrl-C in "
              "its terminal), or give this one another RUN_FILE and SONGSGEN_DATA_DIR.", file=sys.stderr)
        return 1
    if args.check:
        if lock is not None:
            lock.close()
        return 0

    asked: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        # a flag, not an exception: a child is never started and then forgotten
        asked.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handler)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    code = 0
    try:
        if _sqlite():  # continuous replication beside the writers
            procs["replicate"] = _start("replicate")
        procs["worker"] = _start("runworker")
        procs["server"] = _start("runserver", f"127.0.0.1:{args.port}")
        while not asked:
            time.sleep(POLL)
            if args.while_exists is not None and not args.while_exists.exists():
                break
            ended = [(name, proc.returncode) for name, proc in procs.items() if proc.poll() is not None]
            if ended:
                name, code = ended[0]
                print(f"devrun: the {name} exited ({code}); stopping the rest.", file=sys.stderr)
                code = code or 1
                break
    finally:
        # a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(procs, args.grace)
        if args.while_exists is not None:
            args.while_exists.unlink(missing_ok=True)
        if lock is not None:
            lock.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
