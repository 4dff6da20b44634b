"""`manage.py runserver` and `runworker` as real processes on a test's database, as `make run` starts them."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then SIGKILL after a grace period; returns what the process printed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    output = proc.stdout  # a file, not a pipe: a chatty server never blocks on a full pipe
    if output is None:
        return ""
    output.seek(0)
    text = output.read()
    output.close()
    return text


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by _stop
    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.stdout = log
    return proc


@contextmanager
def dev_server(env: dict[str, str], *, timeout: float = 60) -> Iterator[str]:
    """`runserver --noreload` with DEBUG on, as `make run` runs it; yields its base URL once it answers."""
    port = free_port()
    proc = _start({**env, "DEBUG": "1"}, "runserver", "--noreload", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"runserver exited with {proc.returncode}:\n{_stop(proc)}")
            try:
                with urllib.request.urlopen(f"{url}/admin/login/", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"runserver did not answer within {timeout} s:\n{_stop(proc)}")
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


@contextmanager
def worker(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """`runworker` beside it; stopped with SIGTERM (it finishes its job) when the block ends."""
    proc = _start(env, "runworker", "--queue-poll", "0.2", *args)
    try:
        yield proc
    finally:
        _stop(proc)
