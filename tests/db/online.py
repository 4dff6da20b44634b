"""Helpers for the online rebuild's tests: tests/online_fixture migrated by real `manage.py migrate` processes
on the test database file, its rows seeded and read with raw sqlite3, and a writer process beside it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection

from tests.conftest import REPO
from tests.db.conftest import app_env, run_migrate

TRACK, PLAY, VIEW = "online_fixture_track", "online_fixture_play", "online_fixture_track_big"
PREFIX = "_songsgen_"
SHADOW, OLD = PREFIX + "new__" + TRACK, PREFIX + "old__" + TRACK
ONLINE = {"SONGSGEN_ONLINE_REBUILD_MIN_ROWS": "1000"}  # a few tens of thousands of rows: several chunks
STOCK = {"SONGSGEN_ONLINE_REBUILD_MIN_ROWS": str(10**12)}  # never online: Django's own rebuild


def raw(path: str | Path | None = None) -> sqlite3.Connection:
    """A plain sqlite3 connection to the test database (or `path`), autocommit, the app's busy timeout."""
    conn = sqlite3.connect(path or connection.settings_dict["NAME"], timeout=10, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class OnlineApp:
    """tests/online_fixture on the test database, migrated by typed `manage.py migrate` subprocesses."""

    def __init__(self, subprocess_env: dict[str, str], folder: Path) -> None:
        self.env = dict(app_env(subprocess_env, folder, "tests.settings_online"), **ONLINE)
        self.path = Path(connection.settings_dict["NAME"])
        self.folder = folder

    def migrate(self, *args: str, env: dict[str, str] | None = None,
                **extra_env: str) -> subprocess.CompletedProcess[str]:
        return run_migrate(dict(env or self.env, **extra_env), *args, timeout=180)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", *args], env=self.env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def forward(self, target: str = "0004") -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """`migrate online_fixture TARGET --allow-unsafe --no-backup --json` (0004 adds NOT NULL, drops a column)."""
        result = self.migrate("online_fixture", target, "--allow-unsafe", "--no-backup", "--json")
        return result, json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}

    def at_0001(self, rows: int) -> None:
        """The app at 0001 (Django's plain migrate) with `rows` tracks and a play for every third."""
        result = self.migrate("online_fixture", "0001", "--plain", "-v0")
        assert result.returncode == 0, result.stderr
        seed(self.path, rows)

    def clean(self) -> None:
        """Leave the test database without the fixture app or anything a rebuild left, whatever the test did."""
        with closing(raw(self.path)) as conn:
            conn.execute("PRAGMA foreign_keys = OFF")
            conn.execute(f"DROP VIEW IF EXISTS {VIEW}")
            ours = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                "AND name LIKE '\\_songsgen\\_%' ESCAPE '\\'").fetchall()
            for name in [PLAY, TRACK, *(n for n, in ours)]:
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
            conn.execute("DELETE FROM django_migrations WHERE app = 'online_fixture'")


def seed(path: Path, rows: int) -> None:
    """`rows` tracks (every tenth with a note, most with a parent) and a play for every third one."""
    with closing(raw(path)) as conn:
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO {TRACK} (id, name, size, note, parent_id) VALUES (?, ?, ?, ?, ?)",
                         ((i, f"track {i}", i % 997, None if i % 10 else f"note {i}", i // 2 or None)
                          for i in range(1, rows + 1)))
        conn.executemany(f"INSERT INTO {PLAY} (track_id) VALUES (?)", ((i,) for i in range(3, rows + 1, 3)))
        conn.execute("COMMIT")


def rows(path: Path, where: str = "") -> dict[int, tuple[Any, ...]]:
    """id → (name, size) of the tracks."""
    with closing(raw(path)) as conn:
        return {r[0]: r[1:] for r in conn.execute(f"SELECT id, name, size FROM {TRACK} {where}")}


def columns(path: Path, table: str = TRACK) -> list[str]:
    with closing(raw(path)) as conn:
        return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


def leftovers(path: Path) -> list[tuple[str, str]]:
    """(type, name) of every table, trigger or index named like an online rebuild's."""
    with closing(raw(path)) as conn:
        return conn.execute("SELECT type, name FROM sqlite_master WHERE name LIKE '%\\_songsgen\\_%' ESCAPE '\\' "
                            "ORDER BY 1, 2").fetchall()


def schema(path: Path, tables: tuple[str, ...] = (TRACK, PLAY)) -> dict[str, Any]:
    """sqlite_master and what the pragmas say of each table's columns, indexes and foreign keys."""
    with closing(raw(path)) as conn:
        found: dict[str, Any] = {"master": conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex%' "
            "ORDER BY type, name").fetchall()}
        for table in tables:
            found[f"{table} columns"] = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            indexes = conn.execute(f'PRAGMA index_list("{table}")').fetchall()
            found[f"{table} indexes"] = sorted(indexes, key=lambda r: r[1])
            for index in indexes:
                found[f"{table} index {index[1]}"] = conn.execute(f'PRAGMA index_xinfo("{index[1]}")').fetchall()
            found[f"{table} foreign keys"] = conn.execute(f'PRAGMA foreign_key_list("{table}")').fetchall()
        return found


def sequence(path: Path) -> int:
    with closing(raw(path)) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (TRACK,)).fetchone()
    return int(row[0]) if row else 0


@dataclass
class Written:
    """What the writer committed: each live row's last values, every id it was given, in order."""

    rows: dict[int, tuple[str, int]] = field(default_factory=dict)
    inserted: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    commits: int = 0
    longest_wait: float = 0.0


class TrackWriter:
    """The application, writing its own tracks through the migrate: a real process committing the whole time."""

    def __init__(self, path: Path, folder: Path, parents: int) -> None:
        self.out, self.stop_file = folder / "track-writer.log", folder / "track-writer.stop"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.db.track_writer", str(path), str(self.out),
                                      str(self.stop_file), str(parents)], cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.wait_for_commits(20)

    def lines(self) -> list[list[str]]:
        return [line.split("\t") for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def wait_for_commits(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < n:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else "writer died"
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.02)

    def stop(self) -> Written:
        self.wait_for_commits(len(self.lines()) + 20)  # it goes on writing after the migrate
        self.stop_file.write_text("stop")
        self.proc.wait(timeout=60)
        return replay(self.lines())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def replay(lines: list[list[str]]) -> Written:
    written = Written()
    for fields in lines:
        if fields[0] == "ERROR":
            written.errors.append(fields[1])
            continue
        kind, pk, name, size, waited = fields[0], int(fields[1]), fields[2], int(fields[3]), float(fields[4])
        written.commits += 1
        written.longest_wait = max(written.longest_wait, waited)
        if kind == "I":
            written.inserted.append(pk)
        if kind == "D":
            del written.rows[pk]
        else:
            written.rows[pk] = (name, size)
    return written


def assert_writes_kept(path: Path, written: Written, seeded: int) -> None:
    """No writer error; every id new (after the seeded ones, each above the last); the table holds each of the
    writer's rows with its last values and none it deleted."""
    assert not written.errors, written.errors[:3]
    assert written.commits > 20, "the writer hardly wrote"
    assert written.inserted == sorted(set(written.inserted)), "an id was handed out twice (or went backwards)"
    assert written.inserted[0] > seeded
    present = rows(path, f"WHERE id > {seeded}")
    lost = {pk: v for pk, v in written.rows.items() if present.get(pk) != v}
    back = set(present) - set(written.rows)
    assert not lost, f"{len(lost)} of {len(written.rows)} committed rows lost or stale: {list(lost.items())[:3]}"
    assert not back, f"{len(back)} deleted rows came back: {sorted(back)[:5]}"
