"""Shared set-up for the benchmarks: a scratch SQLite file, seeded once, and Django pointed at it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def env_for(db: Path) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{db}", SONGSGEN_DATA_DIR=str(db.parent), DEBUG="1")
    env.setdefault("SECRET_KEY", "bench-only")
    return env


def manage(db: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run manage.py on the scratch database (as a user types it: the safe migrate unless --plain)."""
    return subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], env=env_for(db), cwd=BASE_DIR,
                          check=check, capture_output=True, text=True)


def seeded(db: Path, songs: int, users: int, *, at: tuple[str, str] | None = None) -> None:
    """Create and seed `db` unless it exists; `at` leaves one app at an earlier migration while seeding."""
    if db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    manage(db, "migrate", "--plain", "-v0")
    if at:
        manage(db, "migrate", *at, "--plain", "-v0")
    manage(db, "seed_demo", "--users", str(users), "--songs", str(songs), "--seed", "7", "-v0")


def setup_django(db: Path) -> None:
    os.environ.update(env_for(db))
    os.environ["DJANGO_SETTINGS_MODULE"] = "songsgen.settings"
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


SMOKE_HELP = ("a smoke run: a few hundred rows in a temporary folder, seconds, the same code path; proves the "
              "benchmark still runs (tests/test_bench_smoke.py), its figures mean nothing")


def smoke_dir(name: str) -> Path:
    """A fresh scratch folder for a --smoke run (under $SONGSGEN_BENCH_SCRATCH if set): never a real run's file."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"songsgen-{name}-smoke-", dir=os.environ.get("SONGSGEN_BENCH_SCRATCH")))
