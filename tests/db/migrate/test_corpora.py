"""Two peers' migration corpora through our real `manage.py migrate`, each app on a database of its own.

django-migration-linter 4.1.0's test apps (fetched by `make corpora` into .corpora/) and our re-writing of
django-pg-zero-downtime-migrations' cases (tests/db/corpora/zerodowntime): each is filled to 2,000 rows a
table, then `--check-safety`, `migrate` (`--allow-unsafe` where the case is unsafe) and back to zero. Every
case asserts our verdict and the end state: no traceback, the documented exit codes, no crash marker left,
no row lost where the table stays, and no "back as it was" that is not so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.db.corpora import fixtures
from tests.db.corpora.cases import CASES
from tests.db.corpora.harness import LINTER, Case, Database, Outcome, run_case

ENGINE = fixtures.ENGINE
base_url, case_db = fixtures.base_url, fixtures.case_db



def _params() -> list:
    out = []
    for case in (c.on(ENGINE) for c in CASES):
        marks = []
        if case.skip:
            marks.append(pytest.mark.skip(reason=case.skip))
        if case.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=case.xfail))
        out.append(pytest.param(case, id=f"{case.corpus}-{case.app}", marks=marks))
    return out


def _corpus_present(case: Case) -> None:
    if case.corpus == "linter" and not (LINTER / case.app).is_dir():
        message = f"{LINTER} is missing: run `make corpora` (fetches django-migration-linter 4.1.0's sdist)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true)")
        pytest.skip(message)


def assert_end_state(case: Case, outcome: Outcome) -> None:
    """What every case must show, whatever its verdict."""
    seeded = outcome.seeded
    check, applied, zero = outcome.steps
    for step in outcome.steps:
        assert "Traceback" not in step.stderr, f"{step.args}: {step.stderr[-3000:]}"
        assert step.report, f"{step.args}: no JSON report (exit {step.returncode}): {step.stderr[-2000:]}"
    assert outcome.markers == [[], [], []], f"a crash marker was left: {outcome.markers}"
    # The verdict: safe (exit 0) or unsafe (exit 2) with the codes we expect.
    assert check.returncode == (2 if case.unsafe else 0), check.stderr[-2000:]
    assert case.unsafe <= check.blocking, f"expected {set(case.unsafe)}, got {check.blocking}"
    if not case.unsafe:
        assert check.blocking == set()
    # migrate: as documented, and no row lost where the schema keeps the table.
    assert applied.returncode == case.migrate_exit, applied.stderr[-3000:]
    after = outcome.counts[1]
    for table, rows in seeded.items():
        if table in case.dropped and applied.returncode == 0:
            assert after[table] is None
        else:
            assert after[table] == rows, f"{table}: {rows} rows seeded, {after[table]} after migrate"
    if applied.returncode == 0:
        assert applied.report["status"] == "ok"
        assert not [p for p in applied.report["verification"] if p["severity"] == "error"]
    # Back to zero: the app's tables go; a refused or failed step keeps every row and says so truly.
    assert zero.returncode == case.zero_exit, zero.stderr[-3000:]
    if zero.returncode == 0:
        assert all(rows is None for rows in outcome.counts[2].values())
    else:
        assert outcome.counts[2] == after, "a failed step changed the rows"
    for step, counts in zip(outcome.steps[1:], outcome.counts[1:], strict=True):
        if step.says("back as it was"):
            before = outcome.counts[0] if step is applied else after
            assert counts == before, f"{step.args} said 'back as it was' but rows went from {before} to {counts}"


@pytest.mark.parametrize("case", _params())
def test_corpus_case(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _corpus_present(case)
    case_db: Database = request.getfixturevalue("case_db")
    data = tmp_path / "data"
    data.mkdir()
    outcome = run_case(case, case_db, data)
    try:
        assert_end_state(case, outcome)
    finally:
        shutil.rmtree(data / "backups", ignore_errors=True)


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 failed")])
def test_a_missing_corpus_skips_or_fails_under_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    """Without `make corpora` the linter's cases skip saying what to run; under CI=true they fail."""
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, SONGSGEN_CORPORA_DIR=str(tmp_path / "none"), CI=ci)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs",
         f"{Path(__file__)}::test_corpus_case[linter-app_correct]"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert outcome in done.stdout, done.stdout[-3000:]
    assert "run `make corpora`" in done.stdout
