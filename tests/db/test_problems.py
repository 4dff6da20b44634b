"""The one shape of "what is wrong": its line of text and its JSON (songsgen/db/problems.py)."""

from __future__ import annotations

import json

from songsgen.db.backup import check_backup, check_errors
from songsgen.db.problems import Problem, summary


def test_an_error_as_a_line_and_as_json():
    problem = Problem("schema", "songs_song", "column lyrics is missing")
    assert problem.line() == str(problem) == "[error] schema: songs_song: column lyrics is missing"
    assert json.loads(json.dumps(problem.as_dict())) == {
        "severity": "error", "check": "schema", "subject": "songs_song", "detail": "column lyrics is missing"}


def test_a_warning_is_not_blocking():
    problem = Problem("plans", "by title", "sorts its rows instead of reading an index in order", blocking=False)
    assert problem.severity == "warning"
    assert problem.line().startswith("[warning] plans: by title: ")
    assert problem.as_dict()["severity"] == "warning"


def test_fix_source_and_agreement_appear_only_when_known():
    problem = Problem("INDEX_NOT_CONCURRENT", "songs.0009_x", "builds index i without CONCURRENTLY",
                      fix="Use AddIndexConcurrently.", source="songsgen", agreed=("squawk:a", "squawk:b"))
    assert problem.line().endswith("without CONCURRENTLY (also squawk:a, squawk:b)")
    data = problem.as_dict()
    assert (data["fix"], data["source"], data["agreed"]) == ("Use AddIndexConcurrently.", "songsgen",
                                                             ["squawk:a", "squawk:b"])
    assert set(Problem("x", "y", "z").as_dict()) == {"severity", "check", "subject", "detail"}


def test_summary_joins_the_first_details():
    problems = [Problem("integrity", "db.sqlite3", f"row {n} missing from index i") for n in range(7)]
    assert summary(problems) == "; ".join(f"row {n} missing from index i" for n in range(5))
    assert summary(problems, limit=1) == "row 0 missing from index i"
    assert summary([]) == ""


def test_a_backup_check_reports_problems_and_its_json_keeps_strings(tmp_path):
    """A file that is not SQLite: a Problem of the check that ran, about that file; JSON lists the details."""
    not_sqlite = tmp_path / "notes.sqlite3"
    not_sqlite.write_bytes(b"plain text, not a database " * 200)
    [problem] = check_errors(not_sqlite, quick=True)
    assert (problem.code, problem.subject, problem.blocking) == ("quick_check", str(not_sqlite), True)
    assert "not a database" in problem.detail
    with open(not_sqlite, "rb") as stream:
        report = check_backup(stream, not_sqlite.name, not_sqlite.stat().st_size, tmp_path, None)
    assert not report.ok and report.as_dict()["errors"] == [p.detail for p in report.errors]
    assert all(isinstance(error, str) for error in json.loads(json.dumps(report.as_dict()))["errors"])
