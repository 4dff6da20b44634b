"""The issue's probe: a migration as makemigrations writes it, on a 1M-row table with a writer committing.

    .venv/bin/python bench/safe_ddl_bench.py [--items 1000000] [--rate 200] [--modes ours plain]

tests/safeddl_fixture's 0002 (an index, a CHECK, a unique constraint, NOT NULL on an existing column, a foreign
key on an existing column, a new foreign key column) on a throwaway PostgreSQL 15 (tests/pgserver.py), its item
table filled with --items rows. For each mode, from 0001 (VACUUM ANALYZE first): a writer inserting and
updating items (one autocommit statement per commit, --rate a second, as the code before 0002 does), and
`migrate safeddl_fixture 0002`: ours (the safe forms, no --allow-unsafe) or plain Django (`--plain`: one
transaction, Django's statements). The figures: the longest single write wait while it ran, writer errors,
rows lost (every id the writer saw committed must be there, and no other row gone), the migrate's seconds.
Then back to 0001 with --plain for the next mode. Markdown on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import SMOKE_HELP, smoke_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# tests/test_bench_smoke.py points smoke runs elsewhere
RESULTS = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or REPO / "bench" / "results")
SETTLE = 2.0  # seconds of writes before and after the measured migrate
OWNERS = 1000
ITEM = "safeddl_fixture_item"


def writer(url: str, log: Path, stop: Path, rate: float, tag: str) -> None:
    """Insert an item, then update a random one, and so on: one autocommit statement, one JSON line, per commit."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True, application_name="safe_ddl_bench_writer")
    top = int(conn.execute(f"SELECT max(id) FROM {ITEM}").fetchone()[0])
    period, due, n = 1.0 / rate, time.monotonic(), 0
    with log.open("w") as out:
        out.write(json.dumps({"kind": "start"}) + "\n")
        out.flush()
        while not stop.exists():
            n += 1
            began, error, new_id = time.time(), "", None
            try:
                if n % 2:
                    new_id = conn.execute(
                        f"INSERT INTO {ITEM} (name, size, code, owner_id) VALUES (%s, %s, %s, %s) RETURNING id",
                        [f"w{tag}{n}", n % 10, f"w{tag}-{n}", 1 + n % OWNERS]).fetchone()[0]
                else:
                    conn.execute(f"UPDATE {ITEM} SET size = size + 1 WHERE id = %s", [random.randint(1, top)])
            except psycopg.Error as exc:
                error = f"{getattr(exc, 'sqlstate', '')} {str(exc).splitlines()[0]}"
                if conn.closed or conn.broken:
                    conn = psycopg.connect(url, autocommit=True, application_name="safe_ddl_bench_writer")
            out.write(json.dumps({"t": began, "lat": time.time() - began, "id": new_id, "error": error}) + "\n")
            out.flush()
            due += period
            time.sleep(max(0.0, due - time.monotonic()))


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=7200)


def seed(url: str, items: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("INSERT INTO safeddl_fixture_owner (id, name) SELECT g, 'o' || g FROM generate_series(1, %s) g",
                   [OWNERS])
        db.execute(f"INSERT INTO {ITEM} (name, size, code, owner_id) SELECT 'i' || g, g %% 10, 'c' || g, "
                   f"1 + g %% {OWNERS} FROM generate_series(1, %s) g", [items])
        db.execute("VACUUM ANALYZE")


def rows(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as db:
        return int(db.execute(f"SELECT count(*) FROM {ITEM}").fetchone()[0])


def measure(env: dict[str, str], url: str, mode: str, folder: Path, rate: float) -> dict[str, Any]:
    """One mode: VACUUM ANALYZE, the writer, the migrate; its row of the table."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
    before = rows(url)
    folder.mkdir(parents=True, exist_ok=True)
    log, stop = folder / f"writer_{mode}.jsonl", folder / f"STOP_{mode}"
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "writer", url, str(log), str(stop), str(rate), mode])
    while not (log.exists() and log.stat().st_size):
        time.sleep(0.05)
    time.sleep(SETTLE)
    extra = ["--plain"] if mode == "plain" else ["--json"]
    start = time.time()
    done = manage(env, "migrate", "safeddl_fixture", "0002", "--noinput", *extra)
    end = time.time()
    (folder / f"migrate_{mode}.out").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    time.sleep(SETTLE)
    stop.touch()
    proc.wait(timeout=600)
    events = [json.loads(line) for line in log.read_text().splitlines()[1:] if line.endswith("}")]
    window = [e for e in events if e["t"] <= end and e["t"] + e["lat"] >= start]
    errors = [e for e in events if e["error"]]
    committed = [e["id"] for e in events if e["id"] is not None]
    with psycopg.connect(url) as db:
        found = db.execute(f"SELECT count(*) FROM {ITEM} WHERE id = ANY(%s)", [committed]).fetchone()[0]
    after = rows(url)
    report: dict[str, Any] = {}
    if mode == "ours":
        try:
            report = json.loads(done.stdout[done.stdout.index("{"):])
        except ValueError:
            report = {}
    return {
        "mode": mode, "exit": done.returncode, "seconds": round(end - start, 2), "status": report.get("status"),
        "traceback": "Traceback" in done.stderr,
        "error": "" if done.returncode == 0 else (done.stderr.strip().splitlines() or [""])[-1][:300],
        "writes": len(window), "longest_wait_s": round(max((e["lat"] for e in window), default=0.0), 3),
        "p99_wait_s": round(sorted(e["lat"] for e in window)[int(0.99 * (len(window) - 1))], 3) if window else None,
        "writer_errors": len(errors), "first_error": errors[0]["error"][:200] if errors else "",
        "inserts_committed": len(committed), "inserts_lost": len(committed) - int(found),
        "rows_before": before, "rows_after": after, "rows_lost": before + len(committed) - after,
        "safe_forms": [{k: o.get(k) for k in ("kind", "seconds", "longest_step_seconds")}
                       for o in report.get("online", [])],
        "longest_lock_s": report.get("longest_lock_seconds"),
    }


def table(result: dict[str, Any]) -> str:
    lines = ["| migrate | exit | s | longest write wait s | p99 write s | writes in window | writer errors "
             "| rows lost | inserts committed (lost) | notes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["modes"]:
        name = "ours (safe forms)" if r["mode"] == "ours" else "plain Django (`--plain`)"
        note = r["error"] or r["first_error"]
        if r["traceback"]:
            note = "**traceback** " + note
        lines.append(f"| {name} | {r['exit']} | {r['seconds']:.1f} | {r['longest_wait_s']:.3f} | "
                     f"{r['p99_wait_s'] if r['p99_wait_s'] is not None else '—'} | {r['writes']:,} | "
                     f"{r['writer_errors']} | {r['rows_lost']} | {r['inserts_committed']:,} ({r['inserts_lost']}) | "
                     f"{note[:120].replace('|', '/')} |")
    ours = next((r for r in result["modes"] if r["mode"] == "ours"), None)
    if ours and ours["safe_forms"]:
        lines += ["", "| our safe form | s | longest step s |", "| --- | ---: | ---: |"]
        lines += [f"| {o['kind']} | {o['seconds']:.2f} | {o['longest_step_seconds']:.2f} |" for o in ours["safe_forms"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=200.0, help="writer commits a second (default 200)")
    parser.add_argument("--modes", nargs="+", choices=["ours", "plain"], default=["ours", "plain"])
    parser.add_argument("--work", type=Path, default=RESULTS / "safe_ddl")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(items=300, rate=20.0, work=smoke_dir("safe-ddl"))
    sys.path.insert(0, str(REPO))
    from tests.pgserver import find_bindir, postgres_server, server_major

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found.")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    result: dict[str, Any] = {"items": args.items, "rate": args.rate, "started": started.isoformat(),
                              "postgres": server_major(bindir), "load_avg_start": os.getloadavg(), "modes": []}
    with postgres_server(bindir) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGSGEN_", "DJANGO_"))}
        env.update(DATABASE_URL=url, SONGSGEN_DATA_DIR=str(work), DJANGO_SETTINGS_MODULE="tests.settings_safeddl",
                   PYTHONPATH=str(REPO), SECRET_KEY="bench-only", SONGSGEN_PG_BINDIR=str(bindir))
        if args.smoke:  # a few hundred items count as big, so the smoke run takes the safe forms' path too
            env["SONGSGEN_MIGRATE_BIG_TABLE_ROWS"] = "100"
        for args_ in (("migrate", "--plain", "-v0"), ("migrate", "safeddl_fixture", "0001", "--plain", "-v0")):
            done = manage(env, *args_)
            if done.returncode:
                raise SystemExit(done.stderr)
        clock = time.monotonic()
        seed(url, args.items)
        result["seed_s"] = round(time.monotonic() - clock, 1)
        for mode in args.modes:
            print(f"  {mode} …", file=sys.stderr, flush=True)
            result["modes"].append(measure(env, url, mode, work, args.rate))
            back = manage(env, "migrate", "safeddl_fixture", "0001", "--plain", "-v0")
            if back.returncode:
                raise SystemExit(f"going back to 0001 failed: {back.stderr[-2000:]}")
    result["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"safe_ddl_{started:%Y%m%d_%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"## safeddl_fixture 0002 on PostgreSQL {result['postgres']}, {args.items:,} items, writer {args.rate:g} "
          f"commits/s (seed {result['seed_s']} s)\n")
    print(table(result))
    print(f"\nload average {result['load_avg_start'][0]:.2f} → {result['load_avg_end'][0]:.2f}. "
          f"JSON: {path}")
    if args.smoke and any(m["exit"] for m in result["modes"]):
        raise SystemExit("a mode's migrate failed (see the table): the benchmark no longer measures what it says")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        writer(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    else:
        main()
