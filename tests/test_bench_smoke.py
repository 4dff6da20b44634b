"""Every benchmark in bench/ still runs: each at its --smoke size, as a subprocess, so one that rots fails CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.pgserver import find_bindir

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite",
                                reason="each benchmark starts its own PostgreSQL where it has a leg: once is enough")
BENCH = REPO / "bench"


def _needs_postgres() -> str | None:
    return None if find_bindir() else "PostgreSQL binaries (initdb, pg_ctl) not found"


def _needs_litestream() -> str | None:
    found = (REPO / ".venv" / "bin" / "litestream").exists() or shutil.which("litestream")
    return None if found else "litestream is not installed (.venv/bin or PATH)"


def _needs_upgrade_tools() -> str | None:
    if (REPO / ".pgmajors" / "18").is_dir() and shutil.which("pgbouncer"):
        return _needs_postgres()
    return "PostgreSQL 18 (`make pgmajors`) and pgbouncer are both needed"


def _needs_corpora() -> str | None:
    return _needs_postgres() or (None if (REPO / ".corpora" / "django-migration-linter").is_dir()
                                 else "the linter's corpus is missing (`make corpora`)")


def _needs_pgloader() -> str | None:
    return _needs_postgres() or (None if shutil.which("pgloader") else "pgloader is not installed (CI has none)")


def _needs_gnu_time() -> str | None:
    return None if os.path.exists("/usr/bin/time") else "GNU time (/usr/bin/time) is not installed"


# script: (arguments beside --smoke, what it needs); engines: the ones each script has a leg on.
SCRIPTS: dict[str, tuple[list[str], Callable[[], str | None] | None]] = {
    "admin_bench.py": ([], None),
    "backup_bench.py": ([], _needs_gnu_time),
    "corpora_bench.py": ([], _needs_corpora),
    "live_migrate_bench.py": (["--engine", "both"], _needs_postgres),
    "migrate_bench.py": ([], None),
    "monitoring_bench.py": ([], None),
    "pitr_bench.py": ([], _needs_litestream),
    "queue_bench.py": (["--engines", "sqlite", "postgres"], _needs_postgres),
    "replica_bench.py": ([], _needs_postgres),
    "safe_ddl_bench.py": ([], _needs_postgres),
    "search_bench.py": ([], None),
    "transfer_bench.py": ([], _needs_pgloader),
    "upgrade_bench.py": ([], _needs_upgrade_tools),
}


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SONGSGEN_", "DJANGO_"))}
    # The scripts' --smoke scratch folders (bench/_common.smoke_dir) and results land in the test's own folder;
    # not TMPDIR, which the PostgreSQL servers they start (run as the postgres user) must be able to enter.
    return dict(env, SONGSGEN_BENCH_SCRATCH=str(tmp_path), SONGSGEN_BENCH_RESULTS=str(tmp_path / "results"),
                DEBUG="1", SECRET_KEY="bench-smoke-only")


def test_every_benchmark_has_a_smoke_run_here():
    """A new script in bench/ is listed here, so it is run too."""
    assert sorted(p.name for p in BENCH.glob("*_bench.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs_at_smoke_size(script, tmp_path):
    """The same code path as a full run, at a few hundred rows, ends with exit 0 (a crash does not)."""
    extra, needs = SCRIPTS[script]
    if needs and (missing := needs()):
        pytest.skip(missing)
    result = subprocess.run([sys.executable, str(BENCH / script), "--smoke", *extra], cwd=REPO, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if script == "monitoring_bench.py":  # its PostgreSQL leg: the same script on a server of its own
        if _needs_postgres():
            pytest.skip("PostgreSQL leg: " + str(_needs_postgres()))
        leg = subprocess.run([sys.executable, "-m", "tests.pgserver", "--", sys.executable,
                              str(BENCH / script), "--smoke"], cwd=REPO, env=_env(tmp_path),
                             capture_output=True, text=True, timeout=900)
        assert leg.returncode == 0, leg.stdout[-3000:] + leg.stderr[-3000:]
