"""Continuous replication under load: what a lost disk costs, how fast the replica restores, what Litestream uses.

    python bench/pitr_bench.py [--songs 1000000] [--users 20000] [--runs 5] [--rates 100,2000] [--seconds 30]
                               [--interval 0.1] [--work /tmp/songsgen-pitr-bench]

Seeds `<work>/seed-<songs>.db` with `manage.py seed_demo` unless it is there already. Then, for each writer rate and
run, on a fresh copy of the seed with an empty replica:

  1. `manage.py replicate` starts; its first sync ships the whole database, then its first snapshot and first
     30 s compaction rewrite it once each (timed together as start-up); the measurements start after them;
  2. a writer commits one ~300-byte row per transaction at the rate asked (a table of its own, so any rate
     is reachable from one process), logging each commit's start and end time; half-way, the time is noted
     as the point-in-time target; replicate's CPU and memory are sampled from /proc meanwhile;
  3. writer and replicate are SIGKILLed together and the database file and its WAL deleted (the disk is
     lost); `dbrestore --from-replica` restores the newest state (timed): the seconds of commits lost are
     the time between the last commit the writer was told of and the newest one restored;
  4. `dbrestore --from-replica --to-time TARGET` (timed): the restored state must hold every commit up to a
     second before the target and none begun after it.

The baseline, in the same run: `dbrestore` of a `dbbackup` file of the same database. Results: a table on
stdout (medians over the runs), JSON in bench/results/pitr_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import SMOKE_HELP, seeded, smoke_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")

WRITER = '''
import os, sys, time, sqlite3
path, out, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = sqlite3.connect(path, timeout=10, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL"); conn.execute("PRAGMA synchronous = NORMAL")
payload = "x" * 300
with open(out, "a", buffering=1) as log:
    begun, n = time.monotonic(), 0
    while True:
        n += 1
        started = time.time()
        conn.execute("BEGIN IMMEDIATE")
        rowid = conn.execute("INSERT INTO bench_writer (at, payload) VALUES (?, ?)", (started, payload)).lastrowid
        conn.execute("COMMIT")
        log.write(f"{rowid}\\t{started:.6f}\\t{time.time():.6f}\\n")
        delay = begun + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
'''


def seed(work: Path, users: int, songs: int) -> Path:
    """The seeded database (seed_demo), made once under `work` and reused."""
    target = work / f"seed-{songs}.db"  # by size: a run at another size never reuses it
    seeded(target, songs, users)
    return target


def manage(env: dict[str, str], *args: str) -> float:
    """Run manage.py ARGS; its wall time in seconds."""
    os.sync()
    started = time.monotonic()
    proc = subprocess.run([PY, "manage.py", *args], env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return time.monotonic() - started


def fresh(seed_db: Path, data: Path) -> Path:
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    live = data / "songs.db"
    shutil.copyfile(seed_db, live)
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_writer (id INTEGER PRIMARY KEY, at REAL, payload TEXT)")
    conn.close()
    return live


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def commits(log: Path) -> list[tuple[int, float, float]]:
    rows = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3:  # a line cut by the SIGKILL is not a commit the writer was told of
            rows.append((int(parts[0]), float(parts[1]), float(parts[2])))
    return rows


def restored_ids(live: Path) -> set[int]:
    conn = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM bench_writer")}
    finally:
        conn.close()


def measure(pid: int, seconds: float) -> tuple[float, float, float]:
    """Replicate's share of a core and peak resident MiB over `seconds`, and the time half-way (the PITR target)."""
    time.sleep(1)  # past the writer's start
    cpu0, clock0, peak, target = cpu_seconds(pid), time.monotonic(), 0.0, 0.0
    while time.monotonic() - clock0 < seconds:
        time.sleep(0.25)
        peak = max(peak, rss_mib(pid))
        if not target and time.monotonic() - clock0 >= seconds / 2:
            target = time.time()
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - clock0), peak, target


def one_run(seed_db: Path, work: Path, env: dict[str, str], rate: float, seconds: float) -> dict[str, float]:
    from songsgen.db.backup import replica

    data = work / "data"
    live = fresh(seed_db, data)
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(live)}
    log, out = work / "writer.log", open(work / "replicate.log", "w")
    log.unlink(missing_ok=True)
    started = time.monotonic()
    rep = subprocess.Popen([PY, "manage.py", "replicate"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    # Start-up work done: the whole database shipped, its first snapshot taken, and the first 30 s compaction,
    # which rewrites that first shipment once, behind it: what follows is the steady state.
    levels = data / "replica" / live.name / "ltx"
    while replica.replication_status(settings_dict).lag_seconds is None or not all(
            any((levels / n).glob("*.ltx")) for n in ("9", "1")):
        if rep.poll() is not None:
            raise SystemExit(f"replicate exited: {(work / 'replicate.log').read_text()[-3000:]}")
        time.sleep(0.1)
    first_sync = time.monotonic() - started
    writer = subprocess.Popen([PY, "-c", WRITER, str(live), str(log), str(rate)])
    try:
        cpu, peak, target = measure(rep.pid, seconds)
    finally:
        for proc in (rep, writer):  # the machine dies (or the benchmark was interrupted)
            proc.send_signal(signal.SIGKILL)
        rep.wait()
        writer.wait()
        out.close()
    told = commits(log)
    for suffix in ("", "-wal", "-shm"):  # and the disk with it
        Path(f"{live}{suffix}").unlink(missing_ok=True)

    latest_s = manage(env, "dbrestore", "--from-replica", "--noinput")
    present = restored_ids(live)
    kept = [c for c in told if c[0] in present]
    lost = [c for c in told if c[0] not in present]
    if lost and kept and min(c[0] for c in lost) < kept[-1][0]:
        raise SystemExit("a commit is missing from the middle of the restored state")
    lost_s = told[-1][2] - kept[-1][2] if lost else 0.0

    stamp = datetime.fromtimestamp(target, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    pitr_s = manage(env, "dbrestore", "--from-replica", "--to-time", stamp, "--noinput")
    present = restored_ids(live)
    newest = max(c[2] for c in told if c[0] in present)
    after = sum(1 for c in told if c[1] >= target and c[0] in present)
    missing = sum(1 for c in told if c[2] <= target - 1 and c[0] not in present)
    return {"first_sync_s": first_sync, "commits": len(told), "rate": len(told) / max(1e-9, told[-1][2] - told[0][1]),
            "lost_s": lost_s, "lost_commits": len(lost), "restore_latest_s": latest_s, "restore_pitr_s": pitr_s,
            "pitr_gap_s": target - newest, "pitr_after": after, "pitr_missing": missing,
            "cpu_percent": 100 * cpu, "rss_mib": peak}


def baseline(seed_db: Path, work: Path, env: dict[str, str], runs: int) -> list[float]:
    """`dbrestore` of a `dbbackup` file of the same database, as often as the replica is restored."""
    fresh(seed_db, work / "data")
    manage(env, "dbbackup")
    return [manage(env, "dbrestore", "--noinput") for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rates", default="100,2000", help="Writer transactions per second, comma-separated.")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="How long the writer writes each run (30: one of Litestream's 30 s compactions).")
    parser.add_argument("--interval", type=float, default=0.1, help="SONGSGEN_REPLICA_SYNC_INTERVAL (seconds).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/songsgen-pitr-bench"))
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(songs=300, users=20, runs=1, rates="50", seconds=2.0, work=smoke_dir("pitr"))
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    seed_db = seed(work, args.users, args.songs)
    size_mib = seed_db.stat().st_size / 2**20
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SONGSGEN_"))}
    env.update(DEBUG="1", SONGSGEN_DATA_DIR=str(work / "data"), PYTHONPATH=str(REPO),
               DJANGO_SETTINGS_MODULE="songsgen.settings", SONGSGEN_REPLICA_SYNC_INTERVAL=str(args.interval))
    os.environ.update(env)

    base = baseline(seed_db, work, env, args.runs)
    print(f"dbrestore of a backup file: {' / '.join(f'{s:.2f}' for s in base)} s", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    for rate in [float(r) for r in args.rates.split(",")]:
        name = f"{rate:g} tx/s"
        for run in range(args.runs):
            row = one_run(seed_db, work, env, rate, args.seconds)
            results.setdefault(name, []).append(row)
            print(f"  {name} run {run + 1}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    base_s = statistics.median(base)
    print(f"\nSQLite {size_mib:,.0f} MiB ({args.songs:,} songs), {args.runs} runs of {args.seconds:g} s, sync every "
          f"{args.interval:g} s, {os.cpu_count()} cores; medians (worst)\n")
    print("| writer | reached tx/s | lost s | lost commits | restore newest s | vs file | PITR restore s | "
          "PITR gap s | after / missing | replicate CPU % | RSS MiB | start-up s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rows in results.items():
        print(f"| {name} | {med(rows, 'rate'):,.0f} | {med(rows, 'lost_s'):.2f} ({max(r['lost_s'] for r in rows):.2f}) "
              f"| {med(rows, 'lost_commits'):.0f} | {med(rows, 'restore_latest_s'):.2f} | "
              f"{med(rows, 'restore_latest_s') / base_s:.2f}x | {med(rows, 'restore_pitr_s'):.2f} | "
              f"{med(rows, 'pitr_gap_s'):.2f} ({max(r['pitr_gap_s'] for r in rows):.2f}) | "
              f"{sum(r['pitr_after'] for r in rows):.0f} / {sum(r['pitr_missing'] for r in rows):.0f} | "
              f"{med(rows, 'cpu_percent'):.1f} | {max(r['rss_mib'] for r in rows):.0f} | "
              f"{med(rows, 'first_sync_s'):.1f} |")
    print(f"\nBaseline, dbrestore of a backup file: median {base_s:.2f} s ({' / '.join(f'{s:.2f}' for s in base)})")
    out_dir = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or REPO / "bench" / "results")
    out_dir = work if args.smoke else out_dir  # a smoke run never replaces a full run's figures
    out_dir.mkdir(exist_ok=True)
    (out_dir / "pitr_bench.json").write_text(json.dumps(
        {"database_mib": size_mib, "songs": args.songs, "runs": args.runs, "seconds": args.seconds,
         "interval": args.interval,
         "baseline_restore_s": base, "rates": results}, indent=2))


if __name__ == "__main__":
    main()
