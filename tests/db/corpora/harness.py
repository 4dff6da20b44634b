"""Running one corpus app through the real `manage.py migrate` on a database of its own, and what came of it.

A base database holds the project's own migrations (built once per run); each case gets a copy (a SQLite file,
or a PostgreSQL database made from the base as a template), is applied plainly up to its first migration,
filled to 2,000 rows a table (tests/db/corpora/seed.py), then checked, migrated and taken back to zero by
`migrate` as an operator types it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.conftest import REPO

ROWS = 2000
CORPORA = Path(os.environ.get("SONGSGEN_CORPORA_DIR") or REPO / ".corpora")  # where `make corpora` unpacks
LINTER = CORPORA / "django-migration-linter"
ZERODOWNTIME = "tests.db.corpora.zerodowntime"


@dataclass(frozen=True)
class Case:
    """A corpus app, and what our migrate should make of it on each engine."""

    corpus: str  # "linter" (django-migration-linter 4.1.0) or "zerodowntime" (re-written here)
    app: str
    seed_at: str | None  # the migration applied plainly before the rows are added; None: none
    unsafe: frozenset[str] = frozenset()  # blocking finding codes --check-safety must report (empty: safe)
    migrate_exit: int = 0  # `migrate` (with --allow-unsafe when unsafe)
    zero_exit: int = 0  # `migrate APP zero --allow-unsafe` after it
    dropped: frozenset[str] = frozenset()  # tables the plan drops on purpose
    xfail: str = ""  # why it fails today: another branch owns the bug
    skip: str = ""  # why it cannot run here at all
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)  # "sqlite"/"postgresql" -> field overrides

    def on(self, engine: str) -> Case:
        """The case as expected on `engine`."""
        return replace(self, **self.engines.get(engine, {}))

    @property
    def module(self) -> str:
        return self.app if self.corpus == "linter" else f"{ZERODOWNTIME}.{self.app}"


@dataclass
class Step:
    """One `manage.py migrate` run."""

    args: tuple[str, ...]
    returncode: int
    report: dict[str, Any]
    stderr: str

    @property
    def blocking(self) -> set[str]:
        return {f["code"] for f in self.report.get("findings", []) if f.get("blocking")}

    def says(self, text: str) -> bool:
        return text in self.stderr or text in json.dumps(self.report)


@dataclass
class Outcome:
    seeded: dict[str, int]
    steps: list[Step] = field(default_factory=list)
    counts: list[dict[str, int | None]] = field(default_factory=list)  # seeded tables' rows after each step
    markers: list[list[str]] = field(default_factory=list)  # crash markers left after each step


class Database:
    """A case's own database on the engine the suite runs on: its DATABASE_URL and its row counts."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, tables: list[str]) -> dict[str, int | None]:
        """Each table's row count; None for a table that is not there."""
        if self.url.startswith("sqlite:///"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
                live = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                return {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] if t in live else None
                        for t in tables}
        import psycopg

        with psycopg.connect(self.url) as db:
            out: dict[str, int | None] = {}
            for t in tables:
                exists = db.execute("SELECT to_regclass(%s)", [f'"{t}"']).fetchone()
                out[t] = db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] if exists and exists[0] else None
            return out


def environment(case: Case, url: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=url, SONGSGEN_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO),
               DJANGO_SETTINGS_MODULE="tests.db.corpora.settings", SONGSGEN_CORPUS_APP=case.module)
    env.setdefault("SECRET_KEY", "test-only-secret-key-never-used-outside-the-test-suite")
    env.pop("SONGSGEN_BACKUP_DIR", None)
    if case.corpus == "linter":
        env["SONGSGEN_CORPUS_PATH"] = str(LINTER)
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def migrate(env: dict[str, str], *args: str) -> Step:
    done = _run(env, str(REPO / "manage.py"), "migrate", *args, "--json", "--noinput")
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {}
    return Step(args, done.returncode, report, done.stderr)


def run_case(case: Case, db: Database, data_dir: Path) -> Outcome:
    """Seed, then check, migrate and back to zero, recording each step's report and the rows left."""
    env = environment(case, db.url, data_dir)
    seed = _run(env, "-m", "tests.db.corpora.seed", case.app, str(ROWS), *([case.seed_at] if case.seed_at else []))
    assert seed.returncode == 0, seed.stderr
    outcome = Outcome(seeded=json.loads(seed.stdout.strip().splitlines()[-1]))
    for args in ((case.app, "--check-safety"), (case.app, *(["--allow-unsafe"] if case.unsafe else [])),
                 (case.app, "zero", "--allow-unsafe")):
        outcome.steps.append(migrate(env, *args))
        outcome.counts.append(db.rows(sorted(outcome.seeded)))
        outcome.markers.append(sorted(p.name for p in data_dir.glob("migrate-in-progress-*")))
    return outcome
