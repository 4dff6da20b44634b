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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Process:
    """A manage.py process whose output goes to a file: a chatty server never blocks on a full pipe."""

    popen: subprocess.Popen[str]
    log: IO[str]

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after a grace period; returns what the process printed (once)."""
        if self.log.closed:
            return ""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.log.seek(0)
        output = self.log.read()
        self.log.close()
        return output


def _start(env: dict[str, str], *args: str) -> _Process:
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by _Process.stop
    popen = subprocess.Popen([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    return _Process(popen, log)


@contextmanager
def dev_server(env: dict[str, str], *, timeout: float = 60) -> Iterator[str]:
    """`runserver --noreload` with DEBUG on, as `make run` runs it; yields its base URL once it answers."""
    port = free_port()
    server = _start({**env, "DEBUG": "1"}, "runserver", "--noreload", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_it_answers("runserver", server, urllib.request.Request(f"{url}/admin/login/"), timeout)
        yield url
    finally:
        server.stop()


@contextmanager
def worker(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """`runworker` beside it; stopped with SIGTERM (it finishes its job) when the block ends."""
    process = _start(env, "runworker", "--queue-poll", "0.2", *args)
    try:
        yield process.popen
    finally:
        process.stop()


def _wait_until_it_answers(name: str, server: _Process, request: urllib.request.Request, timeout: float) -> None:
    """Poll the login page until it answers 200; a server that exits or stays silent fails with its output."""
    deadline = time.monotonic() + timeout
    while True:
        if server.popen.poll() is not None:
            raise AssertionError(f"{name} exited with {server.popen.returncode}:\n{server.stop()}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not answer within {timeout} s:\n{server.stop()}")
        time.sleep(0.2)


GUNICORN = Path(sys.executable).with_name("gunicorn")
# What nginx adds to every request it proxies (deploy/nginx/songsgen.conf); the tests play nginx.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}


@dataclass
class Gunicorn:
    """A running `gunicorn -c python:songsgen.gunicorn_conf`, as songsgen-web.service starts it."""

    url: str
    process: _Process

    def output(self) -> str:
        """What it printed so far (access log, errors), without stopping it."""
        self.process.log.flush()
        return Path(f"/proc/self/fd/{self.process.log.fileno()}").read_text()


@contextmanager
def gunicorn(env: dict[str, str], *, timeout: float = 60) -> Iterator[Gunicorn]:
    """gunicorn with the repository's config module, on env's SONGSGEN_WEB_BIND or a free port of 127.0.0.1."""
    env = {"SONGSGEN_WEB_BIND": f"127.0.0.1:{free_port()}", **env}
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by _Process.stop
    popen = subprocess.Popen([str(GUNICORN), "-c", "python:songsgen.gunicorn_conf"], env=env, cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    server = Gunicorn(f"http://{env['SONGSGEN_WEB_BIND']}", _Process(popen, log))
    try:
        request = urllib.request.Request(f"{server.url}/admin/login/", headers=PROXY_HEADERS)
        _wait_until_it_answers("gunicorn", server.process, request, timeout)
        yield server
    finally:
        server.process.stop()
