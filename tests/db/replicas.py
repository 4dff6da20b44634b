"""Helpers for the replication tests: a database of the test's own, `manage.py replicate` and the
application's writer as real processes, and what a restored file holds."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from songsgen.db.backup import replica
from tests import sigint
from tests.conftest import REPO


def make_database(source: str, data: Path) -> Path:
    """A migrated songsgen database of the test's own (a copy of the test database), in WAL mode, in `data`."""
    data.mkdir(parents=True, exist_ok=True)
    target = data / "songs.db"
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = WAL")
    finally:
        src.close()
        dst.close()
    return target


def environment(db: Path, **extra: str) -> dict[str, str]:
    """A manage.py environment working on `db`, its data folder (replica, backups) beside it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGSGEN_", "DATABASE_URL"))}
    env.update(DATABASE_URL=f"sqlite:///{db}", SONGSGEN_DATA_DIR=str(db.parent), PYTHONPATH=str(REPO),
               SECRET_KEY="test-only-secret-key-never-used-outside-the-test-suite")
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def settings_dict(db: Path) -> dict[str, str]:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)}


def wait_until(predicate, what: str, timeout: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.05)


class Replicate:
    """`manage.py replicate` on a test's database, its output in a file; it is Litestream once started."""

    def __init__(self, env: dict[str, str], db: Path) -> None:
        self.db, self.log = db, db.parent / "replicate.log"
        with open(self.log, "ab") as out:
            self.proc = sigint.popen([sys.executable, str(REPO / "manage.py"), "replicate"], env=env, cwd=REPO,
                                     stdout=out, stderr=subprocess.STDOUT)
        wait_until(self.synced, "replicate reports a sync of the replica")

    def synced(self) -> bool:
        assert self.proc.poll() is None, f"replicate exited ({self.proc.returncode}): {self.output()}"
        return replica.replication_status(settings_dict(self.db)).lag_seconds is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def catch_up(self, seconds: float = 1.0) -> None:
        """Give Litestream a few sync intervals to ship what was committed."""
        time.sleep(seconds)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout=timeout)


@dataclass(frozen=True)
class Commit:
    id: int
    started: float  # wall-clock seconds
    committed: float
    waited: float  # seconds the commit itself took


class Writer:
    """The application: a process committing songs through song_request the whole time."""

    def __init__(self, env: dict[str, str], folder: Path, pause: float = 0.01) -> None:
        self.out, self.stop_file = folder / "writer.log", folder / "writer.stop"
        self.stop_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.db.replica_writer", str(self.out),
                                      str(self.stop_file), str(pause)], env=env, cwd=REPO, stderr=subprocess.PIPE,
                                     text=True)
        self.wait_for(5)

    def _lines(self) -> list[list[str]]:
        return [line.split("\t") for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def errors(self) -> list[str]:
        return [fields[1] for fields in self._lines() if fields[0] == "ERROR"]

    def commits(self) -> list[Commit]:
        """Every commit it was told of, in order."""
        return [Commit(int(f[0]), float(f[1]), float(f[2]), float(f[3])) for f in self._lines()
                if f[0] != "ERROR" and len(f) == 4]

    def wait_for(self, n: int, timeout: float = 60) -> None:
        def enough() -> bool:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else "writer died"
            return len(self.commits()) >= n

        wait_until(enough, f"the writer committed {n} songs", timeout)

    def stop(self) -> list[Commit]:
        self.stop_file.write_text("stop")
        self.proc.wait(timeout=60)
        return self.commits()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def writer_ids(path: Path) -> set[int]:
    """The writer's songs in the SQLite file at `path`."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM songs_song WHERE title LIKE 'replica %'")}
    finally:
        conn.close()


def checksum(path: Path) -> str:
    """A digest of every row of every ordinary table of the SQLite file at `path` (Litestream's own left out)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        query = ("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
                 "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_litestream%' ESCAPE '\\' ORDER BY name")
        tables = [r[0] for r in conn.execute(query)]
        digest = hashlib.sha256()
        for table in tables:
            digest.update(repr(conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def leftovers(folder: Path) -> list[str]:
    """Temporary files a restore left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".songsgen-tmp-"))
