"""`make django-suite`: Django's own schema, migrations and SQLite-backend suites as an outside judge of our
schema editor. They run with Django's SQLite backend and with ours taking every rebuild online; a test that
passes on Django's and fails on ours fails the run, unless the allow-list below says why it cannot apply.

Django's schema editor is atomic, so there every online rebuild runs inside its transaction ("inline"). The
"committed" pair runs both editors never atomic, as the safe migrate runs a migration that rebuilds a big
table: each step of ours then commits as it goes (tests/django_suite/nonatomic). --atomic-only skips it.

    python -m tests.django_suite.run [--suite DIR] [--parallel N] [--atomic-only] [--keep-logs] [LABEL ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import django

from tests.django_suite import fetch
from tests.django_suite.recorder import REBUILDS_ENV, RESULTS_ENV

LABELS = ["schema", "migrations", "migration_test_data_persistence", "backends.sqlite"]
# (Django's run, ours) per pair; each name is the settings module tests/django_suite/settings_<name>.py
PAIRS = {"atomic": ("stock", "online"), "committed": ("stock_committed", "online_committed")}
ENGINES = {
    "stock": "django.db.backends.sqlite3",
    "online": "songsgen.db.migrate.sqlite3, every rebuild online",
    "stock_committed": "Django's editor, never atomic",
    "online_committed": "ours, never atomic, every rebuild online",
}
BAD = ("failure", "error", "unexpected-success", "missing")

# Tests that cannot apply to our editor, each with why. A listed test that passes again fails the run: the
# list stays true.
ALLOWED: dict[str, str] = {
    "migrations.test_operations.OperationTests.test_rename_index":
        "asserts Django's 2 queries for RenameIndex on SQLite (DROP INDEX, CREATE INDEX); ours builds the new "
        "index by an online rebuild of the table (dozens of queries); without the query count the test passes",
}


@dataclass
class Run:
    """One run of Django's runtests.py with one settings module."""

    name: str
    outcomes: dict[str, dict[str, str]]
    seconds: float
    returncode: int
    log: Path
    rebuilds: list[str] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(entry["outcome"] for entry in self.outcomes.values())

    def summary(self) -> str:
        c = self.counts()
        extra = "".join(f", {c[k]} {k}" for k in ("expected-failure", "unexpected-success") if c[k])
        return (f"{len(self.outcomes)} run, {c['pass']} passed, {c['failure']} failed, {c['error']} errors, "
                f"{c['skip']} skipped{extra}  in {self.seconds:.1f} s")


def run_suite(name: str, suite: Path, labels: list[str], parallel: str, logs: Path) -> Run:
    """Django's runtests.py for `labels` with our settings module `name`, its outcomes read back."""
    results, rebuilds, log = logs / f"{name}.json", logs / f"{name}.rebuilds", logs / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fetch.REPO), env.get("PYTHONPATH")]))
    env[RESULTS_ENV] = str(results)
    if name.startswith("online"):
        env[REBUILDS_ENV] = str(rebuilds)
    command = [sys.executable, "runtests.py", f"--settings=tests.django_suite.settings_{name}",
               f"--parallel={parallel}", "--noinput", "--verbosity=1", *labels]
    clock = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - clock
    outcomes = json.loads(results.read_text()) if results.is_file() else {}
    lines = rebuilds.read_text().splitlines() if rebuilds.is_file() else []
    return Run(name, outcomes, seconds, done.returncode, log, lines)


def error_line(detail: str) -> str:
    """The traceback's exception line (`AssertionError: 35 != 2 : …`), not its last line of diff."""
    lines = detail.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    after = lines[frames[-1] + 1:] if frames else lines
    found = next((line for line in after if line.strip() and not line.startswith(" ")), after[-1] if after else "")
    return found.strip()[:200]


@dataclass
class Comparison:
    regressions: dict[str, str]  # test id -> outcome on ours and its last line
    allowed: dict[str, str]  # regressions the allow-list excuses
    stale: list[str]  # allow-listed tests that no longer fail on ours
    better: list[str]  # fail on stock, pass on ours


def compare(stock: Run, ours: Run) -> Comparison:
    regressions: dict[str, str] = {}
    better = []
    for test, before in sorted(stock.outcomes.items()):
        after = ours.outcomes.get(test, {"outcome": "missing", "detail": ""})
        if before["outcome"] == "pass" and after["outcome"] in BAD:
            regressions[test] = f"{after['outcome'].upper()}: {error_line(after['detail'])}"
        elif before["outcome"] in BAD and after["outcome"] == "pass":
            better.append(test)
    allowed = {test: why for test, why in regressions.items() if test in ALLOWED}
    stale = [test for test in ALLOWED if test in ours.outcomes and test not in regressions]
    return Comparison({t: w for t, w in regressions.items() if t not in ALLOWED}, allowed, stale, better)


def rebuild_line(lines: list[str]) -> str:
    asked = sum(line.startswith("asked ") for line in lines)
    inline = sum(line.startswith("online ") and line.endswith(" inline") for line in lines)
    committed = sum(line.startswith("online ") and line.endswith(" committed") for line in lines)
    return (f"our editor was asked for {asked} table rebuilds: {inline + committed} done online ({inline} inside "
            f"the caller's transaction, {committed} committing as they went), {asked - inline - committed} "
            "Django's way (SQL collected for sqlmigrate, not the four-statement rebuild, no single primary key shared "
            "by the old and the new table, or foreign keys enforced)")


def report(stock: Run, ours: Run) -> bool:
    """Print what differs between the pair's runs; whether that fails the run."""
    print(f"  {rebuild_line(ours.rebuilds)}")
    broken = [run for run in (stock, ours) if not run.outcomes or run.returncode not in (0, 1)]
    for run in broken:
        print(f"  HARNESS: the {run.name} run ended with exit code {run.returncode} and "
              f"{len(run.outcomes)} outcomes recorded: see {run.log}")
    result = compare(stock, ours)
    for test, what in result.regressions.items():
        print(f"  DIFFERENT {test}: passes on {stock.name}, on {ours.name} {what}")
    for test, what in result.allowed.items():
        print(f"  allowed   {test}: on {ours.name} {what.split(':')[0]} ({ALLOWED[test]})")
    for test in result.stale:
        print(f"  STALE     {test} is allow-listed but does not fail on {ours.name}: remove it from ALLOWED")
    for test in result.better:
        print(f"  note      {test} fails on {stock.name} and passes on {ours.name}")
    print(f"  {len(result.regressions)} difference(s), {len(result.allowed)} allowed")
    return bool(broken or result.regressions or result.stale)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labels", nargs="*", default=LABELS)
    parser.add_argument("--suite", type=Path, default=fetch.suite_dir(fetch.REPO / ".corpora"),
                        help="Django's tests/ folder (make django-suite unpacks it into .corpora/)")
    parser.add_argument("--parallel", default="auto", help="runtests.py --parallel (default: one per core)")
    parser.add_argument("--atomic-only", action="store_true", help="only Django's atomic editor vs ours")
    parser.add_argument("--keep-logs", action="store_true", help="keep the runs' logs even when all is well")
    args = parser.parse_args(argv)
    if django.get_version() != fetch.VERSION:
        print(f"the venv has Django {django.get_version()}, the suite is {fetch.VERSION}'s: run make venv")
        return 2
    if not (args.suite / "runtests.py").is_file():
        print(f"{args.suite}: no runtests.py; `make django-suite` fetches it")
        return 2
    clock = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="django-suite-"))
    pairs = {k: v for k, v in PAIRS.items() if k == "atomic" or not args.atomic_only}
    print(f"Django {fetch.VERSION}'s suites {' '.join(args.labels)}, {2 * len(pairs)} runs:", flush=True)
    failed = False
    for pair, (stock_name, ours_name) in pairs.items():
        print(f"{pair}:")
        runs = {}
        for name in (stock_name, ours_name):
            runs[name] = run_suite(name, args.suite, args.labels, args.parallel, logs)
            print(f"  {name:<16} ({ENGINES[name]}): {runs[name].summary()}", flush=True)
        failed = report(runs[stock_name], runs[ours_name]) or failed
    print(f"{'FAILED' if failed else 'OK'} in {time.monotonic() - clock:.1f} s")
    if failed or args.keep_logs:
        print(f"logs: {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
