"""Time moving a big SQLite database to PostgreSQL: transferdb against pgloader and dumpdata | loaddata.

    .venv/bin/python bench/transfer_bench.py --songs 1000000 --users 20000 --dumpdata-songs 100000

In one run, on one throwaway PostgreSQL server (tests/pgserver.py, started in a temporary folder):

1. Seeds scratch SQLite files with `seed_demo` (never the development database), once: they are kept under
   bench/results/transfer/ (`_common.seeded`) and reused by later runs: `--songs` songs, and a smaller one
   with `--dumpdata-songs` for dumpdata | loaddata, which is far too slow at a million rows (0 skips both
   the small file and dumpdata | loaddata).
2. Clones one migrated, empty PostgreSQL database per run (the same schema, indexes and constraints for all).
3. Runs each tool under `/usr/bin/time -v` for wall time and peak memory (max RSS):
   - `manage.py transferdb` (its figure includes the proof: counts and checksums of every table);
   - pgloader, data only into the migrated schema (`truncate, disable triggers, reset sequences`), then
     `manage.py dbcompare` to check its result (timed apart: pgloader itself proves nothing);
   - `manage.py dumpdata | manage.py loaddata --format=json -` (both processes' memory).
   transferdb also runs on the small file, to show its memory does not grow with the data.
4. Prints rows/s (every row of every table counts) and peak memory per tool, with ratios.

Needs PostgreSQL's binaries, pgloader (`apt-get install pgloader`) and GNU time (`apt-get install time`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench._common import SMOKE_HELP, manage, seeded, smoke_dir  # noqa: E402
from songsgen.cli import non_negative_int, positive_int  # noqa: E402
from tests.pgserver import find_bindir, postgres_server  # noqa: E402

PYTHON = sys.executable
MANAGE = str(BASE_DIR / "manage.py")


@dataclass
class Run:
    tool: str
    rows: int
    seconds: float
    peak_mb: float
    verified: str

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def env_for(url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGSGEN_", "DATABASE_URL"))}
    env.update(DATABASE_URL=url, SONGSGEN_DATA_DIR=str(data_dir), SECRET_KEY=env.get("SECRET_KEY", "bench-only"),
               DEBUG="0", DJANGO_SETTINGS_MODULE="songsgen.settings")
    return env


def run(cmd: list[str] | str, *, env: dict[str, str], shell: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, cwd=BASE_DIR, capture_output=True, text=True, shell=shell,
                            executable="/bin/bash" if shell else None)
    if result.returncode != 0:  # the tools under test report their own failures (see pgloader below)
        sys.exit(f"failed ({result.returncode}): {cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def timed(cmd: str, *, env: dict[str, str], time_files: list[Path]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a shell command whose tools write `/usr/bin/time -v` reports to `time_files`: (wall s, peak MB)."""
    started = time.monotonic()
    result = run(cmd, env=env, shell=True)
    seconds = time.monotonic() - started
    peaks = []
    for path in time_files:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", path.read_text())
        peaks.append(int(match.group(1)) / 1024 if match else float("nan"))
    return seconds, max(peaks), result


def sqlite_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")]
        return sum(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables)


def seed(folder: Path, *, songs: int, users: int) -> tuple[str, int]:
    path = folder / f"seed_{songs}_{users}.db"
    started = time.monotonic()
    seeded(path, songs, users)  # kept and reused: seeding 1M songs takes minutes
    manage(path, "migrate", "--plain", "-v0")  # a seed file from an older release gets today's schema
    rows = sqlite_rows(path)
    print(f"seed {path}: {songs:,} songs, {rows:,} rows in all (FTS5 shadow tables included), "
          f"{time.monotonic() - started:.0f}s, {path.stat().st_size / 2**20:,.0f} MiB", flush=True)
    return f"sqlite:///{path}", rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=positive_int, default=1_000_000)
    parser.add_argument("--users", type=positive_int, default=20_000)
    parser.add_argument("--dumpdata-songs", type=non_negative_int, default=100_000,
                        help="size for dumpdata | loaddata (extrapolated to --songs); 0: skip it")
    parser.add_argument("--batch-size", type=positive_int, default=5_000)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(songs=300, users=20, dumpdata_songs=100, workdir=smoke_dir("transfer"))

    bindir = find_bindir()
    missing = [name for name, ok in (("PostgreSQL binaries", bindir), ("pgloader", shutil.which("pgloader")),
                                     ("GNU time", Path("/usr/bin/time").exists())) if not ok]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (apt-get install postgresql-15 pgloader time)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="songsgen-transfer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; work folder {work}")

    small_users = max(1, args.users * args.dumpdata_songs // args.songs)
    seeds = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or BASE_DIR / "bench" / "results") / "transfer"
    big_url, big_rows = seed(seeds, songs=args.songs, users=args.users)
    small_url, small_rows = ("", 0) if not args.dumpdata_songs else seed(seeds, songs=args.dumpdata_songs,
                                                                          users=small_users)

    runs: list[Run] = []
    with postgres_server(bindir) as admin_url:
        base = admin_url.rsplit("/", 1)[0]
        admin_env = env_for(admin_url, work)

        def psql(query: str) -> None:
            run([PYTHON, "-c", f"import psycopg; psycopg.connect({admin_url!r}, autocommit=True).execute({query!r})"],
                env=admin_env)

        psql("CREATE DATABASE template_migrated")
        run([PYTHON, MANAGE, "migrate", "-v0"], env=env_for(f"{base}/template_migrated", work))

        def target(name: str) -> str:
            psql(f"CREATE DATABASE {name} TEMPLATE template_migrated")
            return f"{base}/{name}"

        def verify(source: str, dest: str) -> str:
            started = time.monotonic()
            result = subprocess.run([PYTHON, MANAGE, "dbcompare", "--from", source, "--to", dest],
                                    env=env_for(source, work), cwd=BASE_DIR, capture_output=True, text=True)
            took = time.monotonic() - started
            return (f"equal (dbcompare {took:.0f}s)" if result.returncode == 0
                    else "DIFFERS: " + result.stderr.strip().splitlines()[-1][:200])

        def transferdb(source: str, rows: int, label: str) -> None:
            dest = target(f"t_{label}")
            tfile = work / f"time_transfer_{label}.txt"
            seconds, peak, _ = timed(
                f"/usr/bin/time -v -o {tfile} {PYTHON} {MANAGE} transferdb --from {source} --to {dest} "
                f"--batch-size {args.batch_size} -v1 2>/dev/null",
                env=env_for(source, work), time_files=[tfile],
            )
            runs.append(Run(f"transferdb ({label}, proof included)", rows, seconds, peak, "equal (its own proof)"))
            print(f"  transferdb {label}: {seconds:.1f}s", flush=True)

        transferdb(big_url, big_rows, f"{args.songs // 1000}k")
        if args.dumpdata_songs:
            transferdb(small_url, small_rows, f"{args.dumpdata_songs // 1000}k")

        # pgloader, data only, into the same migrated schema: first with its defaults, then (if its Lisp
        # heap runs out, as it does here at a million songs with long lyrics) with smaller batches.
        for attempt, options in enumerate(("", ", prefetch rows = 10000, batch rows = 5000")):
            dest = target(f"pgloader{attempt}")
            loadfile = work / f"pgloader{attempt}.load"
            loadfile.write_text(
                f"LOAD DATABASE\n  FROM {big_url}\n  INTO {dest}\n"
                f"  WITH data only, truncate, disable triggers, reset sequences{options}\n"
                "  SET timezone to 'UTC'\n"
                "  EXCLUDING TABLE NAMES LIKE 'sqlite%';\n"
            )
            tfile = work / f"time_pgloader{attempt}.txt"
            label = f"pgloader ({args.songs // 1000}k, {'defaults' if not options else 'smaller batches'})"
            started = time.monotonic()
            result = subprocess.run(
                f"/usr/bin/time -v -o {tfile} pgloader {loadfile} </dev/null >{work}/pgloader{attempt}.log 2>&1",
                shell=True, executable="/bin/bash", env=admin_env, cwd=BASE_DIR,
            )
            seconds = time.monotonic() - started
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tfile.read_text())
            peak = int(match.group(1)) / 1024 if match else float("nan")
            print(f"  {label}: {seconds:.1f}s, exit {result.returncode}", flush=True)
            if result.returncode == 0:
                runs.append(Run(label + ", no proof", big_rows, seconds, peak, verify(big_url, dest)))
                break
            log = (work / f"pgloader{attempt}.log").read_text(errors="replace")
            reason = "Lisp heap exhausted" if "Heap exhausted" in log else "failed, see " + str(work)
            runs.append(Run(label, big_rows, seconds, peak, f"FAILED ({reason})"))

        # dumpdata | loaddata on the small file.
        if args.dumpdata_songs:
            dest = target("dumpload")
            dfile, lfile = work / "time_dumpdata.txt", work / "time_loaddata.txt"
            small_env = env_for(small_url, work)
            seconds, peak, _ = timed(
                f"set -o pipefail; /usr/bin/time -v -o {dfile} {PYTHON} {MANAGE} dumpdata | "
                f"DATABASE_URL={dest} /usr/bin/time -v -o {lfile} {PYTHON} {MANAGE} loaddata --format=json - -v0",
                env=small_env, time_files=[dfile, lfile],
            )
            print(f"  dumpdata | loaddata: {seconds:.1f}s", flush=True)
            runs.append(Run(f"dumpdata | loaddata ({args.dumpdata_songs // 1000}k)", small_rows, seconds, peak,
                            verify(small_url, dest)))

    print()
    print(f"{'tool':<42} {'rows':>11} {'seconds':>8} {'rows/s':>9} {'peak MiB':>9}  result")
    for r in runs:
        print(f"{r.tool:<42} {r.rows:>11,} {r.seconds:>8.1f} {r.rate:>9,.0f} {r.peak_mb:>9,.0f}  {r.verified}")
    ours = runs[0]
    finished = [r for r in runs if r.tool.startswith("pgloader") and not r.verified.startswith("FAILED")]
    print()
    for pgloader in finished:
        print(f"transferdb (proof included) vs {pgloader.tool}: {pgloader.seconds / ours.seconds:.2f}x as fast "
              f"({ours.seconds:.1f}s against {pgloader.seconds:.1f}s), "
              f"{pgloader.peak_mb / ours.peak_mb:.1f}x less memory")
    if args.dumpdata_songs:
        dumpload, small = runs[-1], runs[1]
        extrapolated = ours.rows / dumpload.rate if dumpload.rate else float("nan")
        print(f"transferdb vs dumpdata | loaddata: {ours.rate / dumpload.rate:.1f}x the rows/s "
              f"(dumpdata | loaddata measured at {args.dumpdata_songs:,} songs; at {args.songs:,} it would take about "
              f"{extrapolated / 60:.0f} min at the same rate, and its memory grows with the data)")
        print(f"transferdb memory: {small.peak_mb:,.0f} MiB at {small.rows:,} rows, "
              f"{ours.peak_mb:,.0f} MiB at {ours.rows:,} rows")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
