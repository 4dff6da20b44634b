"""`manage.py replicate` keeps Litestream's routine lines in its own log file, and still shows trouble (issue 26)."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from tests.pgserver import free_port


def _replicate(data_dir: Path, **extra: str) -> subprocess.Popen[str]:
    """`manage.py replicate` as a service manager runs it, on an SQLite database of the test's own."""
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "songs.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SONGSGEN_", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"))}
    env.update(SONGSGEN_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO), **extra,
               SECRET_KEY="test-only-secret-key-never-used-outside-the-test-suite")
    return subprocess.Popen([sys.executable, str(REPO / "manage.py"), "replicate"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never reached {path}")


def test_litestreams_info_lines_go_to_its_log_file_not_the_terminal(tmp_path):
    """In `make run` these lines interleaved with the server's log."""
    data_dir = tmp_path / "data"
    proc = _replicate(data_dir)
    log = data_dir / "songs.db.replicate.log"
    try:
        _wait_for(log, "replicating to", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "level=INFO" not in out + err
    assert f"Litestream logs to {log}" in out
    deadline = time.monotonic() + 10  # the log's reader writes the last line once Litestream has exited
    while "litestream shut down" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "litestream shut down" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_litestreams_warnings_and_errors_are_still_shown(tmp_path):
    """A replica it cannot reach must not fail in silence."""
    data_dir = tmp_path / "data"
    proc = _replicate(data_dir, SONGSGEN_REPLICA_URL=f"sftp://nobody@127.0.0.1:{free_port()}/replica")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "level=WARN" in err and "connection refused" in err
    assert "connection refused" in (data_dir / "songs.db.replicate.log").read_text()


def test_the_log_is_rotated_so_a_long_running_replicate_cannot_fill_the_disk(tmp_path):
    """Months of Litestream's lines end as the log and one previous file, each about the limit, owner-only."""
    import threading

    from songsgen.db.backup.litestream import _route_lines

    log, shown = tmp_path / "songs.db.replicate.log", tmp_path / "shown"
    read_end, write_end = os.pipe()
    shown_fd = os.open(shown, os.O_WRONLY | os.O_CREAT, 0o600)
    router = threading.Thread(target=_route_lines, args=(read_end, log, shown_fd, 100_000))
    router.start()
    with os.fdopen(write_end, "wb") as pipe:
        for n in range(20_000):  # about 1 MB: ten times the limit
            level = "WARN" if n % 5_000 == 0 else "INFO"
            pipe.write(f'time=2026-12-08 level={level} msg="line {n}"\n'.encode())
    router.join(timeout=30)
    os.close(read_end)
    os.close(shown_fd)
    older = log.with_name(log.name + ".1")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(log.name)) == [log.name, older.name]
    for path in (log, older):
        assert path.stat().st_size <= 100_000 + 65_536 + 100, path  # the limit, plus at most one read's lines
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert 'msg="line 19999"' in log.read_text()  # the newest lines are kept
    assert shown.read_text().count("level=WARN") == 4 and "level=INFO" not in shown.read_text()
