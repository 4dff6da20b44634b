"""Zero downtime, as a figure: each migration applied under a steady write, queue and admin load.

    .venv/bin/python bench/live_migrate_bench.py --songs 1000000 --users 20000 --engine sqlite|postgres|both \
        [--rate 200] [--plain] [--only app.name ...] [--work bench/results/live_migrate]

For each migration of accounts, songs and queueing after their first, in dependency order: unapply it with
Django's plain migrate (load paused; rows stay), start the load (bench/_load.py writer and reader,
`manage.py runworker`), wait 2 s, rehearse it (`migrate <app> <name> --rehearse-only --json`: the predicted
lock), wait 2 s, apply it with our `manage.py migrate <app> <name>` (its report's `lock_seconds` for the
migration: the measured lock, next to the predicted one; on SQLite its online rebuilds), wait 2 s, stop the
load, audit every id the writer saw committed; with --plain the same again with Django's plain migrate and
Django's own rebuild (SONGSGEN_ONLINE_REBUILD_MIN_ROWS above any table): the baseline. --only measures the
named migrations alone. Then (without --only) a plan that fails half-way under the same load
(tests/migrations_fixture 0003) and its audit. Markdown on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import SMOKE_HELP, seeded, smoke_dir
from _live_figures import SETTLE, events, summarize, table

REPO = Path(__file__).resolve().parent.parent
LOAD = REPO / "bench" / "_load.py"
# tests/test_bench_smoke.py points smoke runs elsewhere
RESULTS = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or REPO / "bench" / "results")
NOOP_GENERATOR = "tests.queueing.generators.NoopGenerator"
FIXTURE_SETTINGS = "tests.settings_fixture"
# Our SQLite backend rebuilds a big table online even under --plain where the migration runs outside a
# transaction; above every table's size, Django's own rebuild: the baseline, and the quick way to unapply.
DJANGO_REBUILD = {"SONGSGEN_ONLINE_REBUILD_MIN_ROWS": "1000000000000"}


def base_env(url: str, data_dir: Path) -> dict[str, str]:
    """The environment of every process of one engine's run: its database, a scratch data folder, DEBUG off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGSGEN_", "DJANGO_"))}
    env.update(DATABASE_URL=url, SONGSGEN_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="songsgen.settings",
               DEBUG="0", SECRET_KEY="bench-only", ALLOWED_HOSTS="testserver,localhost",
               SONGSGEN_SECURE_SSL_REDIRECT="0", SONGSGEN_SECURE_COOKIES="0", PYTHONPATH=str(REPO),
               SONGSGEN_MIGRATE_KEEP_SNAPSHOTS="1")
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run manage.py as a user types it (our safe migrate unless --plain, Django's own rebuild with it)."""
    if "--plain" in args:
        env = dict(env, **DJANGO_REBUILD)
    proc = subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=7200)
    if check and proc.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_py(env: dict[str, str], *args: str) -> str:
    """Run bench/_load.py to completion; its stdout."""
    return subprocess.run([sys.executable, str(LOAD), *args], env=env, cwd=REPO, check=True,
                          capture_output=True, text=True).stdout




def rehearsed(env: dict[str, str], app: str, name: str, timeout: float) -> dict[str, Any]:
    """What `migrate <app> <name> --rehearse-only --json` predicts for this migration: its lock_seconds and
    locks, the flags a refusal asked for, or why there is no prediction."""
    run = run_migrate(env, [app, name, "--rehearse-only"], "ours", timeout)
    report = _report(run["stdout"])
    steps = (report.get("rehearsal") or {}).get("steps") or []
    step = next((s for s in steps if s["migration"] == f"{app}.{name}"), None)
    if step is None:
        why = report.get("error") or (run["stderr"].strip().splitlines() or [f"exit {run['exit']}"])[-1]
        return {"lock_s": None, "locks": [], "flags": run["flags"], "error": why[:200]}
    return {"lock_s": step["lock_seconds"], "locks": step["locks"], "flags": run["flags"], "error": step["error"]}


# --- databases ----------------------------------------------------------------------------------
def seed_file(args: argparse.Namespace) -> Path:
    """The seeded SQLite file for this size, created once (seed_demo) and kept under --work."""
    seed = args.work.resolve() / f"seed_{args.songs}_{args.users}.db"
    seeded(seed, args.songs, args.users)
    # A seed made by older code gets today's schema: every step starts from the code's newest state.
    manage(base_env(f"sqlite:///{seed}", seed.parent / "seed-data"), "migrate", "--plain", "-v0")
    return seed


@contextmanager
def sqlite_database(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """A working copy of the seeded file."""
    started = time.monotonic()
    seed = seed_file(args)
    live_dir = args.work.resolve() / "sqlite"
    shutil.rmtree(live_dir, ignore_errors=True)
    live_dir.mkdir(parents=True)
    shutil.copyfile(seed, live_dir / "songs.db")
    args.seed_seconds["sqlite"] = round(time.monotonic() - started, 1)
    yield base_env(f"sqlite:///{live_dir / 'songs.db'}", live_dir)


@contextmanager
def postgres_database(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL 15 server (tests/pgserver.py), migrated, then filled from the seeded SQLite file."""
    # transferdb rather than seed_demo on the server: 5.9 s against 13.3 s at 100,000 songs (bench/README.md),
    # and the seed file is there already when SQLite ran first.
    sys.path.insert(0, str(REPO))
    from tests.pgserver import find_bindir, postgres_server

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found.")
    data_dir = args.work.resolve() / "postgres"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    started = time.monotonic()
    seed = seed_file(args)
    with postgres_server(bindir) as url:
        env = dict(base_env(url, data_dir), SONGSGEN_PG_BINDIR=str(bindir))
        manage(env, "migrate", "--plain", "-v0")
        manage(env, "transferdb", "--from", f"sqlite:///{seed}", "--to", url, "--truncate", "-v0")
        args.seed_seconds["postgres"] = round(time.monotonic() - started, 1)
        yield env


# --- load ---------------------------------------------------------------------------------------
class Load:
    """The three load processes of one measured step, each writing JSON lines (or its output) under `folder`."""

    def __init__(self, env: dict[str, str], folder: Path, rate: float, tag: str,
                 worker_code: Path | None = REPO) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.stop_file = folder, folder / "STOP"
        self.stop_file.unlink(missing_ok=True)
        self.writer_log, self.reader_log = folder / "writer.jsonl", folder / "reader.jsonl"
        self.worker_out = (folder / "worker.log").open("w")
        self.stderr = (folder / "load.stderr").open("w")  # tracebacks the load processes log
        self.worker_code = worker_code
        worker_env = dict(env, SONGSGEN_GENERATOR=NOOP_GENERATOR, PYTHONPATH=str(worker_code or REPO))
        worker = ([sys.executable, str(worker_code / "manage.py"), "runworker", "--queue-poll", "0.1"]
                  if worker_code else [sys.executable, "-c", "import time; time.sleep(1e9)"])  # no worker: a stand-in
        self.procs = {
            "writer": subprocess.Popen([sys.executable, str(LOAD), "writer", str(self.writer_log),
                                        str(self.stop_file), "--rate", str(rate), "--tag", tag], env=env, cwd=REPO,
                                       stderr=self.stderr),
            "reader": subprocess.Popen([sys.executable, str(LOAD), "reader", str(self.reader_log),
                                        str(self.stop_file)], env=env, cwd=REPO, stderr=self.stderr),
            "worker": subprocess.Popen(worker, env=worker_env, cwd=worker_code or REPO, stdout=self.worker_out,
                                       stderr=subprocess.STDOUT),
        }
        deadline = time.monotonic() + 60
        while not (_started(self.writer_log) and _started(self.reader_log)):  # Django set up in both
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs.values()):
                break
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        """Stop every process; whether the worker died before it was asked to stop, and how."""
        died = self.procs["worker"].poll()
        self.stop_file.touch()
        self.procs["worker"].send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.worker_out.close()
        self.stderr.close()
        lines = (self.folder / "worker.log").read_text().strip().splitlines()
        return {"worker_died": died is not None, "worker_exit": died, "worker_code": _release_name(self.worker_code),
                "worker_last": lines[-1][:200] if died is not None and lines else ""}


def _release_name(code: Path | None) -> str:
    return "none" if code is None else "today" if code == REPO else code.name


def previous_release(app: str, name: str) -> Path | None:
    """The tree of the commit before the one that added this migration (unpacked once), or None outside git."""
    found = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", f"{app}/migrations/{name}.py"],
                           cwd=REPO, capture_output=True, text=True)
    commits = found.stdout.split()
    if found.returncode or not commits:
        return None
    parent = subprocess.run(["git", "rev-parse", "--verify", "-q", commits[-1] + "^"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    if not parent:
        return None
    tree = RESULTS / "live_migrate" / "releases" / parent[:12]
    if not tree.exists():
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", parent], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive, check=True)
        partial.rename(tree)
    return tree


def worker_code(env: dict[str, str], app: str, name: str) -> Path | None:
    """Today's worker where today's models fit the schema; else the previous release's, if it had one."""
    if json.loads(load_py(env, "fits")):
        return REPO
    tree = previous_release(app, name)
    return tree if tree and (tree / "queueing" / "management" / "commands" / "runworker.py").exists() else None


def _started(log: Path) -> bool:
    return log.exists() and log.stat().st_size > 0


def audited(env: dict[str, str], log: Path) -> dict[str, Any]:
    """The writer's commits in `log` checked against the database (bench/_load.py audit)."""
    try:
        return dict(json.loads(load_py(env, "audit", str(log))))
    except subprocess.CalledProcessError as exc:  # a failed plan may have left the database unreadable
        return {"committed": 0, "lost": "?", "reused": "?", "error": exc.stderr[-500:]}


# --- steps --------------------------------------------------------------------------------------
def _refusal_flag(text: str) -> str | None:
    if "--allow-unsafe" in text:
        return "--allow-unsafe"
    if "--no-backup" in text:
        return "--no-backup"
    return None


def run_migrate(env: dict[str, str], argv: list[str], mode: str, timeout: float) -> dict[str, Any]:
    """`migrate <argv>`, ours (again with the flag a refusal asks for) or --plain; killed as hung after `timeout`."""
    flags: list[str] = []
    while True:
        extra = ["--plain"] if mode == "plain" else ["--json", *flags]
        proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", *argv, "--noinput", *extra],
                                env=dict(env, **DJANGO_REBUILD) if mode == "plain" else env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        start, hung = time.time(), False
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            hung = True
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        end = time.time()
        flag = _refusal_flag(stderr + stdout) if mode == "ours" and proc.returncode == 2 else None
        if flag is None or flag in flags:
            return {"exit": "hung" if hung else proc.returncode, "start": start, "end": end, "flags": flags,
                    "stdout": stdout, "stderr": stderr}
        flags.append(flag)


def _report(stdout: str) -> dict[str, Any]:
    try:
        return json.loads(stdout[stdout.index("{"):])
    except ValueError:
        return {}


def measure(env: dict[str, str], folder: Path, args: argparse.Namespace, target: list[str],
            mode: str, rehearse: bool = False) -> dict[str, Any]:
    """Start the load, wait, (rehearse `target` and wait,) apply it with `mode`, wait, stop; one row of the table."""
    load = Load(env, folder, args.rate, tag=folder.name, worker_code=worker_code(env, target[0], target[1]))
    time.sleep(SETTLE)
    rehearsal = None
    if rehearse:  # as an operator's --rehearse runs: the application keeps running
        rehearsal = rehearsed(env, target[0], target[1], args.migrate_timeout)
        time.sleep(SETTLE)
    run = run_migrate(env, target, mode, args.migrate_timeout)
    time.sleep(SETTLE)
    worker = load.stop()
    report = _report(run["stdout"]) if mode == "ours" else {}
    (folder / "migrate.out").write_text(run["stdout"] + "\n--- stderr ---\n" + run["stderr"])
    error = report.get("error") or (run["stderr"].strip().splitlines() or [""])[-1]
    if run["exit"] == "hung":
        error = f"still running after {args.migrate_timeout:g} s, killed; last output: {error}"
    label = ".".join(target)  # "app.0002_name"; a short name ("0003") matches nothing
    applied = report.get("applied", [])
    row = {
        "target": " ".join(target), "mode": mode, "exit": run["exit"], "seconds": round(run["end"] - run["start"], 2),
        "start": run["start"], "end": run["end"],
        "flags": run["flags"], "status": report.get("status"), "guard": report.get("guard"),
        "phases": report.get("seconds", {}), "applied": applied,
        "longest_lock_s": report.get("longest_lock_seconds"),
        # SQLite: each table rebuilt online (table, rows, chunks, longest_lock_seconds, cutover_seconds, seconds).
        "online": report.get("online", []),
        # The target's own lock, measured live as the rehearsal measures it (songsgen/db/migrate/lockmeter.py).
        "measured_lock_s": next((a.get("lock_seconds") for a in applied if a["migration"] == label), None),
        "rehearsal": rehearsal,
        "error": error[:300] if run["exit"] else "",
        "writer": summarize(load.writer_log, run["start"], run["end"]),
        "reader": summarize(load.reader_log, run["start"], run["end"]),
        "release": next((e.get("release") for e in events(load.writer_log) if e["kind"] == "start"), None),
        **worker,
    }
    (folder / "row.json").write_text(json.dumps(row, indent=2))  # kept should a later step end the run
    return row


def migrations_under_load(env: dict[str, str], args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Every migration after the first of each app (or those --only names), unapplied, then applied under
    load (ours, then plain); every commit the writer saw audited after each."""
    rows, plan = [], json.loads(load_py(env, "plan"))
    unknown = set(args.only) - {f"{app}.{name}" for app, name, _ in plan}
    if unknown:
        raise SystemExit(f"--only: no such migration after an app's first: {', '.join(sorted(unknown))}")
    for app, name, prev in plan:
        if args.only and f"{app}.{name}" not in args.only:
            continue
        for mode in ("ours", "plain") if args.plain else ("ours",):
            manage(env, "migrate", app, prev, "--plain", "-v0")  # load paused; rows stay in place
            print(f"  {app} {name} ({mode}) …", file=sys.stderr, flush=True)
            step = folder / f"{app}_{name}_{mode}"
            rows.append(measure(env, step, args, [app, name], mode, mode == "ours"))
            rows[-1]["audit"] = audited(env, step / "writer.jsonl")
    # Whatever an unapply took along comes back; a migration a killed migrate left half-done may refuse.
    restored = manage(env, "migrate", "--plain", "-v0", check=False)
    if restored.returncode:
        print(f"  migrate --plain after the steps failed: {restored.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr, flush=True)
    return rows


def failing_plan(env: dict[str, str], args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """tests/migrations_fixture 0003 failing half-way under load, atomic and not; then the writer's audit."""
    rows = []
    for atomic in ("1", "0"):
        fixture = dict(env, DJANGO_SETTINGS_MODULE=FIXTURE_SETTINGS, SONGSGEN_FIXTURE_ATOMIC=atomic)
        manage(fixture, "migrate", "migrations_fixture", "zero", "--plain", "-v0")
        step = folder / f"fixture_0003_{'atomic' if atomic == '1' else 'nonatomic'}"
        print(f"  failing plan, atomic={atomic} …", file=sys.stderr, flush=True)
        row = measure(dict(fixture, SONGSGEN_FIXTURE_MODE="fail"), step, args, ["migrations_fixture", "0003"], "ours")
        row["audit"] = audited(fixture, step / "writer.jsonl")
        row["atomic"] = atomic == "1"
        rows.append(row)
        manage(fixture, "migrate", "migrations_fixture", "zero", "--plain", "-v0", check=False)
    return rows


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rate", type=float, default=200.0, help="writer's song_request calls per second")
    parser.add_argument("--plain", action="store_true", help="also a row per migration with Django's plain migrate")
    parser.add_argument("--migrate-timeout", type=float, default=900.0,
                        help="seconds before a migrate under load counts as hung and is killed (default 900)")
    parser.add_argument("--only", action="append", default=[], metavar="APP.NAME",
                        help="measure only this migration (repeatable; the failing plan is left out)")
    parser.add_argument("--work", type=Path, default=RESULTS / "live_migrate",
                        help="seed files and per-step load logs (default bench/results/live_migrate)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(songs=300, users=20, rate=20.0, work=smoke_dir("live-migrate"),
                          only=args.only or ["songs.0005_add_song_genre_index"])
    args.seed_seconds = {}
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    started = datetime.now(UTC)
    result: dict[str, Any] = {"songs": args.songs, "users": args.users, "rate": args.rate,
                              "started": started.isoformat(), "load_avg_start": os.getloadavg(), "engines": {}}
    out = []
    for engine in engines:
        print(f"{engine}: seeding {args.songs:,} songs …", file=sys.stderr, flush=True)
        database = sqlite_database if engine == "sqlite" else postgres_database
        with database(args) as env:
            load_py(env, "prepare")
            folder = args.work.resolve() / "steps" / engine
            shutil.rmtree(folder, ignore_errors=True)
            clock = time.monotonic()
            rows = migrations_under_load(env, args, folder)
            failing = [] if args.only else failing_plan(env, args, folder)
            result["engines"][engine] = {"seed_s": args.seed_seconds.get(engine),
                                         "run_s": round(time.monotonic() - clock, 1),
                                         "migrations": rows, "failing_plan": failing}
            out.append(table(engine, rows, failing))
    result["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"live_migrate_{started:%Y%m%d_%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"## Live migrate, {args.songs:,} songs, {args.users:,} users, writer {args.rate:g} songs/s")
    print("\n".join(out))
    for engine, data in result["engines"].items():
        print(f"\n{engine}: seed {data['seed_s']} s, steps {data['run_s']} s")
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
