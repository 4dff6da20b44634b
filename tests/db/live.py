"""Helpers for tests of the safe migrate on a live database: the application's writer as a real process,
the state to compare, and a migrate that hangs half-way on demand (tests/migrations_fixture)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from tests import sigint
from tests.conftest import REPO
from tests.db.dbstate import database_state

NON_ATOMIC = {"SONGSGEN_FIXTURE_ATOMIC": "0"}


def state():
    """Schema and every row that existed before the test's writer started (its own rows are checked apart)."""
    connection.close()  # read what is on disk now, not a cached view
    state = database_state(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, title, play_count FROM songs_song WHERE title NOT LIKE 'live %' ORDER BY id")
        kept = cursor.fetchall()
    # The writer's songs reach the songs table, its search index (songs_song_search*) and the queue.
    state["rows"] = {t: v for t, v in state["rows"].items()
                     if not t.startswith("songs_song") and t != "queueing_generationqueue"}
    return state, kept


class LiveWriter:
    """The application, writing through the migrate: a real process committing songs the whole time."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.out, self.stop_file = folder / "writer.log", folder / "writer.stop"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.db.live_writer", str(self.out), str(self.stop_file)],
                                     env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.wait_for_commits(3)

    def lines(self) -> list[list[str]]:
        return [line.split("\t") for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def wait_for_commits(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len([x for x in self.lines() if x[0] != "ERROR"]) < n:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else "writer died"
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.05)

    def stop(self) -> tuple[dict[int, str], list[str], float]:
        """(id → title of every commit it was told of, errors, longest wait in seconds)."""
        seen = len(self.lines())
        self.wait_for_commits(seen + 3)  # it goes on writing after the migrate
        self.stop_file.write_text("stop")
        self.proc.wait(timeout=60)
        committed: dict[int, str] = {}
        errors, longest = [], 0.0
        for fields in self.lines():
            if fields[0] == "ERROR":
                errors.append(fields[1])
                continue
            assert int(fields[0]) not in committed, f"id {fields[0]} handed out twice"
            committed[int(fields[0])] = fields[1]
            longest = max(longest, float(fields[2]))
        return committed, errors, longest


def assert_writer_rows_kept(writer: LiveWriter) -> None:
    """Every row the writer committed is there, under its own id: none lost, no id reused."""
    committed, errors, _longest = writer.stop()
    assert not errors, errors[:3]
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, title FROM songs_song WHERE title LIKE 'live %'")
        present = dict(cursor.fetchall())
    # The fixture's 0002 appends " (touched)" to every title: a row it reached is changed, not lost.
    missing = {pk: t for pk, t in committed.items() if present.get(pk) not in (t, f"{t} (touched)")}
    assert not missing, f"{len(missing)} of {len(committed)} committed rows lost or overwritten: {list(missing)[:5]}"


def hanging_migrate(fixture_env, tmp_path, *args: str, hang: float = 120, **popen) -> subprocess.Popen:
    """`migrate migrations_fixture 0003` in a subprocess, returned once its last migration hangs half-way."""
    flag = tmp_path / f"flag-{time.monotonic_ns()}"
    env = dict(fixture_env, SONGSGEN_FIXTURE_MODE="hang", SONGSGEN_FIXTURE_FLAG=str(flag),
               SONGSGEN_FIXTURE_HANG=str(hang))
    proc = sigint.popen([sys.executable, str(REPO / "manage.py"), "migrate", "migrations_fixture", "0003", *args],
                        env=env, cwd=REPO, **popen)
    wait_for(flag, proc)
    return proc



def wait_for(flag: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert proc.poll() is None, "migrate ended before reaching the hang"
        assert time.monotonic() < deadline, "migrate never reached 0003"
        time.sleep(0.05)
    time.sleep(0.2)


def killed_half_way(fixture_env: dict[str, str], tmp_path: Path, **extra_env: str) -> None:
    """SIGKILL a migrate while its 0003 hangs, as power loss would; give the server a moment to notice."""
    proc = hanging_migrate(dict(fixture_env, **extra_env), tmp_path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.5)
