"""The two peers' migration corpora on PostgreSQL, each table filled to 100,000 rows, a writer committing throughout.

    .venv/bin/python bench/corpora_bench.py [--rows 100000] [--rate 200] [--cases APP …] [--no-contrast]

On a throwaway PostgreSQL 15 (tests/pgserver.py), for each case of tests/db/corpora/cases.py (the linter's
apps need `make corpora`): a database of its own copied from one holding the project's migrations, the app
applied plainly to its first migration and every table filled to --rows (tests/db/corpora/seed.py, ANALYZE);
`migrate APP --check-safety`; then, with a writer updating a random row of each seeded table in turn (one
autocommit UPDATE per commit, --rate a second), our `migrate APP` WITHOUT --allow-unsafe: applied (with the
longest single write wait while it ran, rows kept) or refused (with its message). For contrast (unless
--no-contrast): a refused case again with --allow-unsafe (what the refusal kept from running), and a case our
migrate changed with safe forms again by plain Django (`migrate --plain`, after going back). The issue's bar:
applied with no write wait over 1 s, or refused with a one-line recipe; never a traceback.
Markdown on stdout, JSON in bench/results/corpora_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import SMOKE_HELP, smoke_dir  # noqa: E402

from tests.db.corpora.cases import CASES  # noqa: E402
from tests.db.corpora.harness import LINTER, Case, environment  # noqa: E402

# tests/test_bench_smoke.py points smoke runs elsewhere
RESULTS = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or REPO / "bench" / "results")
SETTLE = 1.0  # seconds of writes before and after each measured migrate
BAR_S = 1.0  # the issue's: no single write waits longer


# --- the writer (a process of its own: `corpora_bench.py writer URL LOG STOP RATE TABLE …`) -------------------
def writer(url: str, log: Path, stop: Path, rate: float, tables: list[str]) -> None:
    """Update a random row of each table in turn, one autocommit statement each; a JSON line per commit."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True, application_name="corpora_bench_writer")
    top = {t: int(conn.execute(f'SELECT COALESCE(MAX(id), 1) FROM "{t}"').fetchone()[0]) for t in tables}
    period, due, n = 1.0 / rate, time.monotonic(), 0
    with log.open("w") as out:
        out.write(json.dumps({"kind": "start"}) + "\n")
        out.flush()
        while not stop.exists():
            table = tables[n % len(tables)]
            n += 1
            began, error = time.time(), ""
            try:
                conn.execute(f'UPDATE "{table}" SET id = id WHERE id = %s', [random.randint(1, top[table])])
            except psycopg.Error as exc:
                error = f"{getattr(exc, 'sqlstate', '')} {str(exc).splitlines()[0]}"
                if conn.closed or conn.broken:
                    conn = psycopg.connect(url, autocommit=True, application_name="corpora_bench_writer")
            out.write(json.dumps({"t": began, "lat": time.time() - began, "table": table, "error": error}) + "\n")
            out.flush()
            due += period
            time.sleep(max(0.0, due - time.monotonic()))


class Writer:
    """The writer process for one measured migrate, and what it saw in a time window."""

    def __init__(self, url: str, folder: Path, rate: float, tables: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log, self.stop_file = folder / "writer.jsonl", folder / "STOP"
        self.stop_file.unlink(missing_ok=True)
        self.proc = (subprocess.Popen([sys.executable, __file__, "writer", url, str(self.log), str(self.stop_file),
                                       str(rate), *tables]) if tables else None)
        deadline = time.monotonic() + 30
        while self.proc and not (self.log.exists() and self.log.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, start: float, end: float) -> dict[str, Any]:
        """Stop it; its commits that overlapped [start, end], the longest of them, and every error."""
        if self.proc is None:
            return {"writes": 0, "longest_s": None, "errors": 0, "first_error": ""}
        self.stop_file.touch()
        self.proc.wait(timeout=600)
        events = [json.loads(line) for line in self.log.read_text().splitlines()[1:] if line.endswith("}")]
        window = [e for e in events if e["t"] <= end and e["t"] + e["lat"] >= start]
        errors = [e for e in events if e["error"]]
        return {"writes": len(window), "longest_s": round(max((e["lat"] for e in window), default=0.0), 3),
                "errors": len(errors), "first_error": errors[0]["error"][:160] if errors else ""}


# --- one case ---------------------------------------------------------------------------------------------------
def manage(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`manage.py migrate ARGS` as an operator types it; exit, seconds, the JSON report, stderr, wall times."""
    json_flag = [] if "--plain" in args else ["--json"]
    start = time.time()
    done = subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", *args, *json_flag, "--noinput"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=3600)
    end = time.time()
    try:
        report = json.loads(done.stdout[done.stdout.index("{"):]) if json_flag else {}
    except ValueError:
        report = {}
    return {"args": list(args), "exit": done.returncode, "start": start, "end": end,
            "seconds": round(end - start, 2), "report": report, "stderr": done.stderr}


def measured(env: dict[str, str], url: str, folder: Path, rate: float, tables: list[str], *args: str
             ) -> dict[str, Any]:
    """A migrate under the writer: the run, the writer's longest wait and errors."""
    load = Writer(url, folder, rate, tables)
    time.sleep(SETTLE)
    run = manage(env, *args)
    (folder / "migrate.out").write_text(json.dumps(run["report"], indent=1) + "\n--- stderr ---\n" + run["stderr"])
    time.sleep(SETTLE)
    run["writer"] = load.stop(run["start"], run["end"])
    return run


def counts(url: str, tables: list[str]) -> dict[str, int | None]:
    import psycopg

    with psycopg.connect(url) as db:
        out: dict[str, int | None] = {}
        for t in tables:
            found = db.execute("SELECT to_regclass(%s)", [f'"{t}"']).fetchone()
            out[t] = int(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) if found and found[0] else None
        return out


def refusal(run: dict[str, Any]) -> str:
    """The refusal's recipe: each blocking finding's code and `fix` line, else the report's error."""
    fixes = [f"{f['code']}: {f.get('fix') or f.get('detail')}" for f in run["report"].get("findings", [])
             if f.get("blocking")]
    return " / ".join(fixes)[:300] or (run["report"].get("error") or "")[:300]


def summary(run: dict[str, Any]) -> dict[str, Any]:
    report = run["report"]
    return {"args": run["args"], "exit": run["exit"], "seconds": run["seconds"], "status": report.get("status"),
            "traceback": "Traceback" in run["stderr"], "writer": run.get("writer"),
            "online": [{k: o.get(k) for k in ("table", "kind", "seconds", "longest_step_seconds")}
                       for o in report.get("online", [])],
            "error": (report.get("error") or (run["stderr"].strip().splitlines() or [""])[-1])[:300]
            if run["exit"] else "",
            "refusal": refusal(run) if run["exit"] == 2 else ""}


def run_case(case: Case, server: str, base: str, rows: int, rate: float, contrast: bool, work: Path
             ) -> dict[str, Any]:
    """Seed, check, migrate under the writer (and the contrasts); the case's row of the table."""
    import psycopg

    name = f"corpus_{case.app[:40]}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{base}"')
    url, folder = f"{server}/{name}", work / case.app
    folder.mkdir(parents=True, exist_ok=True)
    env = environment(case, url, folder)
    try:
        clock = time.monotonic()
        seed = subprocess.run([sys.executable, "-m", "tests.db.corpora.seed", case.app, str(rows),
                               *([case.seed_at] if case.seed_at else [])], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=3600)
        if seed.returncode:
            return {"case": case.app, "corpus": case.corpus, "error": f"seed failed: {seed.stderr[-300:]}"}
        seeded: dict[str, int] = json.loads(seed.stdout.strip().splitlines()[-1])
        tables = sorted(seeded)
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("ANALYZE")
        out: dict[str, Any] = {"case": case.app, "corpus": case.corpus, "seeded": seeded,
                               "seed_s": round(time.monotonic() - clock, 1)}
        check = manage(env, case.app, "--check-safety")
        findings = check["report"].get("findings", [])
        out["check"] = {"exit": check["exit"], "traceback": "Traceback" in check["stderr"],
                        "blocking": sorted({f["code"] for f in findings if f.get("blocking")}),
                        "applied_safely": sorted({f["code"] for f in findings
                                                  if "applied safely" in f.get("detail", "")})}
        ours = measured(env, url, folder / "ours", rate, tables, case.app)
        out["ours"] = summary(ours)
        after = counts(url, tables)
        out["rows_lost"] = {t: seeded[t] - (after[t] or 0) for t in tables
                            if after[t] != seeded[t] and not (after[t] is None and ours["exit"] == 0)}
        if contrast and ours["exit"] == 2:
            out["unsafe"] = summary(measured(env, url, folder / "unsafe", rate, tables, case.app, "--allow-unsafe"))
        elif contrast and ours["exit"] == 0 and out["ours"]["online"] and case.seed_at:
            back = manage(env, case.app, case.seed_at, "--plain")
            if back["exit"] == 0:
                out["plain"] = summary(measured(env, url, folder / "plain", rate, tables, case.app, "--plain"))
            else:
                out["plain"] = {"error": f"going back failed: {back['stderr'].strip().splitlines()[-1][:200]}"}
        out["case_s"] = round(time.monotonic() - clock, 1)
        return out
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- output -----------------------------------------------------------------------------------------------------
def _wait(run: dict[str, Any] | None) -> str:
    if not run or not run.get("writer") or run["writer"]["longest_s"] is None:
        return "—"
    return f"{run['writer']['longest_s']:.3f}"


def verdict(row: dict[str, Any]) -> str:
    ours = row["ours"]
    if ours["traceback"] or row["check"]["traceback"]:
        return "**traceback**"
    if ours["exit"] == 2:
        return "refused"
    if ours["exit"] == 0:
        return "applied safely" if ours["online"] else "applied"
    return f"failed (exit {ours['exit']})"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| case | check: blocking / applied safely | our migrate | safe forms | s | longest write wait s "
             "| writer errors | rows lost | refusal / error | --allow-unsafe: wait s | plain Django: wait s |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for row in results:
        if "ours" not in row:
            cells = [f"{row['corpus']} `{row['case']}`", *["—"] * 7, row["error"][:120], "—", "—"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        ours, check = row["ours"], row["check"]
        forms = ", ".join(f"{o['kind']} {o['table']}" for o in ours["online"]) or "—"
        note = ours["refusal"] or ours["error"]
        unsafe, plain = row.get("unsafe"), row.get("plain")
        lines.append("| " + " | ".join([
            f"{row['corpus']} `{row['case']}`",
            f"{', '.join(check['blocking']) or '—'} / {', '.join(check['applied_safely']) or '—'}",
            verdict(row), forms, f"{ours['seconds']:.1f}", _wait(ours),
            str(ours["writer"]["errors"]) if ours["writer"] else "—",
            str(sum(row["rows_lost"].values())), note.replace("|", "\\|")[:160] or "—",
            _wait(unsafe) + (f" (exit {unsafe['exit']})" if unsafe and unsafe["exit"] else ""),
            _wait(plain) if plain and "exit" in plain else (plain or {}).get("error", "—")[:60],
        ]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows a table (default 100,000)")
    parser.add_argument("--rate", type=float, default=200.0, help="writer commits a second (default 200)")
    parser.add_argument("--cases", nargs="*", default=None, help="only these apps (default: every case)")
    parser.add_argument("--no-contrast", dest="contrast", action="store_false",
                        help="skip the --allow-unsafe and plain Django runs")
    parser.add_argument("--work", type=Path, default=RESULTS / "corpora", help="per-case logs")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        # one case our migrate applies, one it refuses (then with --allow-unsafe for contrast)
        vars(args).update(rows=300, rate=20.0, work=smoke_dir("corpora"),
                          cases=args.cases or ["app_alter_column", "app_add_not_null_column"])
    from tests.pgserver import find_bindir, postgres_server, server_major

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found.")
    cases = [c.on("postgresql") for c in CASES if not c.skip and (args.cases is None or c.app in args.cases)]
    if any(c.corpus == "linter" for c in cases) and not LINTER.is_dir():
        raise SystemExit(f"{LINTER} is missing: run `make corpora`")
    started = datetime.now(UTC)
    result: dict[str, Any] = {"rows": args.rows, "rate": args.rate, "started": started.isoformat(),
                              "postgres": server_major(bindir), "load_avg_start": os.getloadavg(), "cases": []}
    clock = time.monotonic()
    with postgres_server(bindir) as url:
        import psycopg

        server, base = url.rsplit("/", 1)[0], f"corpora_base_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{base}"')
        env = dict(os.environ, DATABASE_URL=f"{server}/{base}", PYTHONPATH=str(REPO),
                   DJANGO_SETTINGS_MODULE="tests.settings", SONGSGEN_DATA_DIR=str(args.work / "base"),
                   SONGSGEN_PG_BINDIR=str(bindir))
        env.setdefault("SECRET_KEY", "bench-only")
        (args.work / "base").mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "--plain", "-v0"], env=env, cwd=REPO,
                       check=True, timeout=600)
        os.environ["SONGSGEN_PG_BINDIR"] = str(bindir)
        for case in cases:
            print(f"  {case.corpus} {case.app} …", file=sys.stderr, flush=True)
            result["cases"].append(run_case(case, server, base, args.rows, args.rate, args.contrast, args.work))
    result["seconds"] = round(time.monotonic() - clock, 1)
    result["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"corpora_{started:%Y%m%d_%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"## Corpora on PostgreSQL {result['postgres']}, {args.rows:,} rows a table, writer {args.rate:g} "
          f"commits/s\n")
    print(table(result["cases"]))
    print(f"\n{len(cases)} cases in {result['seconds']} s; load average {result['load_avg_start'][0]:.2f} → "
          f"{result['load_avg_end'][0]:.2f}. JSON: {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        writer(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]), sys.argv[6:])
    else:
        main()
