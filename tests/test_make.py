"""The two make targets a newcomer meets first: `make run` stops when told to, `make lint` leaves no trace."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from tests import sigint
from tests.conftest import REPO

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed"),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="runs the same on either leg: once is enough"),
]
STAMP = ".venv/.installed"  # `make -o` it: the test must not reinstall the venv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(data: Path, marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SONGSGEN_", "DJANGO_"))}
    return dict(env, SONGSGEN_DATA_DIR=str(data), SECRET_KEY="test-only", SONGSGEN_TEST_MARKER=marker)


def _processes_with(marker: str) -> list[str]:
    """Command lines of the live processes whose environment carries `marker`: everything `make run` started."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"SONGSGEN_TEST_MARKER={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip())
        except OSError:  # gone, or not ours to read
            continue
    return [line for line in found if line]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_make_run_stops_server_worker_and_replication_when_make_is_signalled(tmp_path, signum):
    """And a second `make run` meanwhile is refused without stopping the first."""
    marker, port = f"{signum.name}-{os.getpid()}", _free_port()
    make = sigint.popen(
        ["make", "--no-print-directory", "-o", STAMP, "run", f"PORT={port}", f"RUN_FILE={tmp_path / 'running'}"],
        cwd=REPO, env=_env(tmp_path / "data", marker), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:  # migrate, demo data, then the server answers
            assert make.poll() is None, make.stderr.read() if make.stderr else ""
            assert time.monotonic() < deadline, "make run did not serve within 180 s"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        assert any("runworker" in line for line in _processes_with(marker))
        deadline = time.monotonic() + 30  # `manage.py replicate` becomes Litestream once its checks pass
        while not any("litestream replicate" in line for line in _processes_with(marker)):
            assert time.monotonic() < deadline, f"no Litestream among {_processes_with(marker)}"
            time.sleep(0.2)
        # A second `make run` in the same checkout is refused in one line and leaves the first one running.
        second = subprocess.run(
            ["make", "--no-print-directory", "-o", STAMP, "run", f"PORT={port}", f"RUN_FILE={tmp_path / 'running'}"],
            cwd=REPO, env=_env(tmp_path / "data", marker + "-second"), capture_output=True, text=True, timeout=120,
        )
        assert second.returncode != 0
        assert "`make run` is already running in this checkout (pid " in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and (tmp_path / "running").exists()
        time.sleep(1)  # the first one's supervisor looks at its file every 0.2 s
        assert make.poll() is None
        urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5)
        make.send_signal(signum)  # to make alone, as `kill` or a process manager sends it
        make.wait(timeout=30)
        deadline = time.monotonic() + 15
        while (left := _processes_with(marker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [], f"still running 15 s after {signum.name}: {left}"
    finally:
        for line in _processes_with(marker):  # never leave a server behind, whatever failed
            subprocess.run(["pkill", "-KILL", "-f", line], check=False)
        if make.poll() is None:
            make.kill()
            make.wait()


def test_make_lint_leaves_no_database_in_the_work_tree(tmp_path):
    tree = tmp_path / "tree"
    listed = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listed, cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    (tree / ".venv").symlink_to((REPO / ".venv").resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SONGSGEN_", "DJANGO_"))}
    # RUFF=true: the style of the files is the lint's business, not this test's.
    result = subprocess.run(["make", "--no-print-directory", "-o", STAMP, "lint", "RUFF=true"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tree / "data").exists(), sorted(p.name for p in (tree / "data").iterdir())
