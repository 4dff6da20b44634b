"""Backup and restore on a big SQLite database: ours against `cp` and django-dbbackup's default, in one run.

    python bench/backup_bench.py [--songs 1000000] [--users 20000] [--runs 3] [--work /tmp/songsgen-backup-bench]
                                 [--without threads] [--compare PIECES]

Seeds `<work>/seed.db` with `manage.py seed_demo` unless it is there already, then times each step as a
separate process under `/usr/bin/time -v` (median wall time and peak resident memory over --runs):

  backup:  cp of the file (the floor; unsafe on a live database) · the raw backup-API copy
           (`sqlite3.Connection.backup(pages=-1)` into a file: the baseline of the 2x target) ·
           our `manage.py dbbackup` · django-dbbackup's own command with its default SqliteBackupConnector
  restore: cp of the file + `PRAGMA integrity_check` (the baseline of the 3x target) ·
           our `manage.py dbrestore --noinput` · django-dbbackup's dbrestore with its default connector

Then one restore of each while another process holds the database open and writes, and the
`integrity_check` each process sees afterwards. Results: a table on stdout, JSON in bench/results/.

--without runs our commands with those I/O tuning pieces off (through _untuned.py, which replaces
`songsgen.db.backup.live.beside` in the command's process). --compare times, in every run, our
backup and restore all on and with each listed piece off, one after the other in an order rotated
per run: what each piece pays, in one run (the ratio column is then off against all on).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import SMOKE_HELP, seeded, smoke_dir

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TIME = "/usr/bin/time"

STOCK_SETTINGS = '''
from songsgen.settings import *  # noqa
# django-dbbackup as it ships: its default SQLite connector and plain FileSystemStorage.
DBBACKUP_CONNECTOR_MAPPING = {}
STORAGES["dbbackup"] = {"BACKEND": "django.core.files.storage.FileSystemStorage",
                        "OPTIONS": {"location": str(BACKUP_DIR)}}
'''
STOCK_COMMAND = (
    "import sys, django; django.setup(); from django.core.management import call_command; "
    "from dbbackup.management.commands import {0} as m; call_command(m.Command(), *sys.argv[1:])"
)
RAW_BACKUP = (
    "import sqlite3, sys; s = sqlite3.connect(sys.argv[1]); d = sqlite3.connect(sys.argv[2]); "
    "s.backup(d, pages=-1); d.close(); s.close()"
)
INTEGRITY = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"
HOLDER = '''
import os, sys, time, sqlite3
stop, ready = sys.argv[2], sys.argv[3]
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS bench_holder (id INTEGER PRIMARY KEY, at REAL)")
errors, i = 0, 0
while not os.path.exists(stop):
    try:
        conn.execute("BEGIN IMMEDIATE"); conn.execute("INSERT INTO bench_holder (at) VALUES (?)", (time.time(),))
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        errors += 1
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    i += 1
    if i == 10:
        open(ready, "w").close()
    time.sleep(0.01)
try:
    result = conn.execute("PRAGMA integrity_check").fetchone()[0]
except sqlite3.DatabaseError as exc:
    result = str(exc)
print(result.splitlines()[0], errors)
'''


# The pieces songsgen/db/backup/live.py's tuned() knows.
TUNING = ("threads", "threads:pack", "threads:safety", "threads:check",
          "threads:verify")


def tuning_pieces(value: str) -> str:
    unknown = [piece for piece in value.split(",") if piece and piece not in TUNING]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown tuning {', '.join(unknown)}; known: {', '.join(TUNING)}")
    return value


def ours(off: str, *args: str) -> list[str]:
    """Our manage.py command, with the I/O tuning pieces `off` (comma-separated) replaced by inline calls."""
    if not off:
        return [PY, "manage.py", *args]
    return [PY, str(Path(__file__).with_name("_untuned.py")), off, "manage.py", *args]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run `cmd` under /usr/bin/time -v: wall seconds, peak RSS in MiB, the process."""
    os.sync()  # no step pays for writing back the previous step's dirty pages
    proc = subprocess.run([TIME, "-v", *cmd], env=env, cwd=REPO, capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or not wall or not rss:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr[-3000:]}")
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) // 1024, proc


def integrity(path: Path) -> str:
    return subprocess.run([PY, "-c", INTEGRITY, str(path)], capture_output=True, text=True).stdout.strip()


def seed(work: Path, users: int, songs: int) -> Path:
    """The seeded database (seed_demo), made once under `work` and reused."""
    target = work / "seed.db"
    seeded(target, songs, users)
    return target


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/songsgen-backup-bench"))
    parser.add_argument("--without", type=tuning_pieces, default="", metavar="PIECES",
                        help=f"I/O tuning to turn off in our commands, comma-separated: {', '.join(TUNING)}")
    parser.add_argument("--compare", type=tuning_pieces, default="", metavar="PIECES",
                        help="also time our backup and restore with each of these pieces off, interleaved with "
                             "all on, in every run: what each pays, measured in one run")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(songs=300, users=20, runs=1, work=smoke_dir("backup"))
    if not Path(TIME).exists():
        raise SystemExit("/usr/bin/time is missing: apt-get install -y time")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    seed_db = seed(work, args.users, args.songs)
    size_mib = seed_db.stat().st_size / 2**20
    data, ours_dir, stock_dir = work / "data", work / "backups-ours", work / "backups-stock"
    live = data / "songs.db"
    (work / "stock_settings.py").write_text(STOCK_SETTINGS)
    base_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    base_env.update(DEBUG="1", SONGSGEN_DATA_DIR=str(data), PYTHONPATH=f"{REPO}:{work}")
    ours_env = dict(base_env, SONGSGEN_BACKUP_DIR=str(ours_dir))
    stock_env = dict(base_env, SONGSGEN_BACKUP_DIR=str(stock_dir), DJANGO_SETTINGS_MODULE="stock_settings")

    def fresh_live() -> None:
        clear(data)
        shutil.copyfile(seed_db, live)

    results: dict[str, list[tuple[float, int]]] = {}

    def record(name: str, wall: float, rss: int) -> None:
        results.setdefault(name, []).append((wall, rss))
        print(f"  {name:<34} {wall:7.2f} s {rss:6d} MiB", flush=True)

    variants = ["", *[piece for piece in args.compare.split(",") if piece]] if args.compare else []

    def compare(run: int) -> None:
        """Our backup then restore, all tuning on and with each compared piece off, in an order rotated per run."""
        shift = run % len(variants) if variants else 0
        for off in variants[shift:] + variants[:shift]:
            name = f"without {off}" if off else "all on"
            clear(ours_dir)
            record(f"compare backup: {name}", *timed(ours(off, "dbbackup"), ours_env)[:2])
            record(f"compare restore: {name}", *timed(ours(off, "dbrestore", "--noinput"), ours_env)[:2])
            assert integrity(live) == "ok"

    fresh_live()
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", flush=True)
        copy = work / "copy.db"
        for target in (copy, work / "raw.db"):
            target.unlink(missing_ok=True)
        record("backup: cp (floor, unsafe)", *timed(["cp", str(live), str(copy)])[:2])
        copy.unlink()
        record("backup: raw backup API", *timed([PY, "-c", RAW_BACKUP, str(live), str(work / "raw.db")])[:2])
        clear(ours_dir)
        record("backup: ours (dbbackup, zstd)", *timed(ours(args.without, "dbbackup"), ours_env)[:2])
        clear(stock_dir)
        record("backup: django-dbbackup default", *timed(
            [PY, "-c", STOCK_COMMAND.format("dbbackup")], stock_env)[:2])

        record("restore: cp + integrity_check", *timed(
            ["sh", "-c", f'cp "$1" "$2" && {PY} -c "$3" "$2"', "sh", str(work / "raw.db"), str(live), INTEGRITY])[:2])
        record("restore: ours (dbrestore)", *timed(ours(args.without, "dbrestore", "--noinput"), ours_env)[:2])
        assert integrity(live) == "ok"
        (stock_file,) = [p for p in stock_dir.iterdir() if not p.name.endswith(".metadata")]
        record("restore: django-dbbackup default", *timed(
            [PY, "-c", STOCK_COMMAND.format("dbrestore"), "--noinput", "-I", str(stock_file)], stock_env)[:2])
        assert integrity(live) == "ok"
        compare(run)

    # Never corrupt: one restore of each while another process holds the database open and writes.
    safety: dict[str, str] = {}
    for name, cmd, env in (
        ("ours", ours(args.without, "dbrestore", "--noinput"), ours_env),
        ("django-dbbackup default", [PY, "-c", STOCK_COMMAND.format("dbrestore"), "--noinput", "-I",
                                     str(stock_file)], stock_env),
    ):
        fresh_live()
        stop, ready = work / "stop", work / "ready"
        stop.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)
        holder = subprocess.Popen([PY, "-c", HOLDER, str(live), str(stop), str(ready)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        while not ready.exists() and holder.poll() is None:
            time.sleep(0.01)
        restore = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        time.sleep(1)
        stop.touch()
        out, _ = holder.communicate(timeout=300)
        seen = out.split()[0] if out.split() else "holder died"
        safety[name] = (f"restore exit {restore.returncode}; integrity seen by the writer: {seen}; "
                        f"afterwards: {integrity(live)}")
        print(f"  under a writer, {name}: {safety[name]}", flush=True)

    summary = {name: {"median_s": statistics.median(w for w, _ in runs), "peak_mib": max(r for _, r in runs),
                      "runs_s": [round(w, 2) for w, _ in runs]} for name, runs in results.items()}
    raw = summary["backup: raw backup API"]["median_s"]
    base = summary["restore: cp + integrity_check"]["median_s"]
    print(f"\nSQLite {size_mib:,.0f} MiB ({args.songs:,} songs, {args.users:,} users), {args.runs} runs, "
          f"{os.cpu_count()} cores{f', without {args.without}' if args.without else ''}\n")
    print("| step | median s | peak MiB | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in summary.items():
        if name.startswith("compare"):
            ref = summary[name.split(":")[0] + ": all on"]["median_s"]  # the piece's change: off against on
        else:
            ref = raw if name.startswith("backup") else base
        print(f"| {name} | {row['median_s']:.2f} | {row['peak_mib']} | {row['median_s'] / ref:.2f}x |")
    for name, text in safety.items():
        print(f"\nRestore under a writer, {name}: {text}")
    out_dir = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or REPO / "bench" / "results")
    out_dir = work if args.smoke else out_dir  # a smoke run never replaces a full run's figures
    out_dir.mkdir(exist_ok=True)
    suffix = f"-without-{args.without.replace(',', '-').replace(':', '_')}" if args.without else ""
    (out_dir / f"backup_bench{suffix}.json").write_text(json.dumps(
        {"database_mib": size_mib, "songs": args.songs, "runs": args.runs, "without": args.without,
         "compare": args.compare,
         "steps": summary,
         "under_writer": safety}, indent=2))


if __name__ == "__main__":
    main()
