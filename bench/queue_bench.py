"""Queue benchmark: drain no-op jobs with 1, 2, 4 worker processes on SQLite and PostgreSQL.

    python bench/queue_bench.py [--jobs 20000] [--workers 1 2 4] [--engines sqlite postgres]
                                [--djtasks-python /tmp/djtasks-venv/bin/python] [--djtasks-jobs 3000]

For each engine (a fresh SQLite file in WAL; a throwaway PostgreSQL server from tests/pgserver.py):
  * enqueue rate through songs.services.song_requests, batches of 500 (and through single
    song_request calls, 500 per transaction);
  * drain rate (jobs/s, from the first claim to the last completion, as the database recorded them)
    and enqueue→start latency p50/p99, for each worker count, with a no-op generator that logs each
    execution to a file: any song generated twice is a double execution;
  * "database is locked" in any worker's output, surfaced or swallowed (logged);
  * a worker SIGKILLed while holding a job: seconds until the job is back in the queue (lease 5 s).
The baseline peer, django-tasks' database backend (`db_worker` of django-tasks-db), drains no-op
tasks on the same engine in the same run, from its own virtualenv (it is not a dependency of ours):
    python3.11 -m venv /tmp/djtasks-venv
    /tmp/djtasks-venv/bin/pip install django-tasks-db django-tasks dj-database-url 'psycopg[binary]'
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import SMOKE_HELP  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LEASE = 5
NOOP = "tests.queueing.generators.NoopGenerator"
SLOW = "tests.queueing.generators.SlowGenerator"


# --- our queue, measured inside a process configured for one database ---------------------------
def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    import django

    django.setup()


def _reset() -> None:
    from queueing.models import GenerationQueue
    from songs.models import Song

    GenerationQueue.objects.all().delete()
    Song.objects.all().delete()


def _enqueue(n: int, *, single: bool = False) -> float:
    """Enqueue n songs, 500 per batch; returns songs/s.

    Through song_requests (the batch form of song_request: each request validated, the batch written
    with one INSERT of songs and one of jobs), or with `single` through song_request called 500 times
    inside one transaction.
    """
    from django.db import transaction

    from accounts.models import User
    from songs.services import SongRequest, song_request, song_requests

    user = User.objects.first() or User.objects.create_user(username="bench", email="bench@example.com")
    start = time.perf_counter()
    for first in range(0, n, 500):
        numbers = range(first, min(n, first + 500))
        if single:
            with transaction.atomic():
                for i in numbers:
                    song_request(user=user, title=f"bench {i}", genre="pop")
        else:
            song_requests(SongRequest(user, f"bench {i}", "pop") for i in numbers)
    return n / (time.perf_counter() - start)


def _manage(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _drain(n: int, workers: int, tmp: Path) -> dict[str, object]:
    from django.db import connections
    from django.db.models import Max, Min

    from queueing.models import GenerationQueue

    _reset()
    _enqueue(n)
    log = tmp / f"exec-{workers}.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, SONGSGEN_GENERATOR=NOOP, SONGSGEN_TEST_EXEC_LOG=str(log), PYTHONPATH=str(REPO))
    connections.close_all()
    wall = time.perf_counter()
    proc = _manage("runworker", "--concurrency", str(workers), "--burst", env=env)
    out, err = proc.communicate(timeout=1800)
    wall = time.perf_counter() - wall
    done = GenerationQueue.objects.filter(status="done")
    span = done.aggregate(first=Min("started_at"), last=Max("completed_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    latencies = [(s - q).total_seconds() * 1000 for q, s in done.values_list("queued_at", "started_at")]
    executed = log.read_text().split()
    return {
        "workers": workers, "jobs": n, "done": done.count(), "rate": n / seconds, "wall_s": wall,
        "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
        "executions": len(executed), "double_executions": len(executed) - len(set(executed)),
        "locked": (out + err).lower().count("database is locked"), "exit": proc.returncode,
    }


def _killed_worker_recovery() -> float:
    """Seconds from SIGKILL of a worker holding a job until the job is back in the queue."""
    from queueing.models import GenerationQueue

    _reset()
    _enqueue(1)
    env = dict(os.environ, SONGSGEN_GENERATOR=SLOW, SONGSGEN_TEST_SLOW_SECONDS="600",
               SONGSGEN_LEASE_SECONDS=str(LEASE), PYTHONPATH=str(REPO))
    victim = _manage("runworker", "--queue-poll", "0.1", env=env)
    while not GenerationQueue.objects.filter(status="running").exists():
        time.sleep(0.05)
    job = GenerationQueue.objects.get()
    # a second worker, idle, that will find the expired lease
    rescuer = _manage("runworker", "--queue-poll", "0.1", env={**env, "SONGSGEN_TEST_SLOW_SECONDS": "0"})
    time.sleep(1)
    victim.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    victim.communicate()
    while GenerationQueue.objects.filter(pk=job.pk, status="running", worker_id=job.worker_id).exists():
        time.sleep(0.05)
    back = time.perf_counter() - killed
    rescuer.send_signal(signal.SIGTERM)
    rescuer.communicate(timeout=60)
    return back


def measure_ours(jobs: int, workers: list[int]) -> dict[str, object]:
    """Run inside a process whose DATABASE_URL names the database; returns the figures."""
    from django.core.management import call_command

    _setup_django()
    call_command("migrate", verbosity=0, safe=False)
    from django.db import connection

    result: dict[str, object] = {"vendor": connection.vendor}
    with tempfile.TemporaryDirectory() as tmp:
        _reset()
        result["enqueue_rate"] = _enqueue(min(jobs, 10_000))
        _reset()
        result["enqueue_rate_single"] = _enqueue(min(jobs, 10_000), single=True)
        result["drains"] = [_drain(jobs, w, Path(tmp)) for w in workers]
        result["kill_recovery_s"] = _killed_worker_recovery()
        _reset()
    return result


# --- django-tasks-db, in its own virtualenv ------------------------------------------------------
DJT_SETTINGS = textwrap.dedent('''
    import os, dj_database_url
    SECRET_KEY = "bench"
    USE_TZ = True
    INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    db = dj_database_url.parse(os.environ["DATABASE_URL"])
    if db["ENGINE"].endswith("sqlite3"):
        # the same SQLite set-up as ours: WAL, IMMEDIATE write transactions, a busy timeout
        db["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 10,
                         "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"}
    DATABASES = {"default": db}
''')
DJT_TASKS = textwrap.dedent('''
    from django_tasks import task

    @task()
    def noop(i):
        return None
''')
DJT_RUN = textwrap.dedent('''
    import os, sys, time, django
    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.db.models import Max, Min
    from django_tasks_db.models import DBTaskResult
    from djt_tasks import noop
    n = int(sys.argv[1])
    call_command("migrate", verbosity=0)  # plain Django: the peer has no safe migrate
    DBTaskResult.objects.all().delete()
    with transaction.atomic():
        for i in range(n):
            noop.enqueue(i)
    print("enqueued", flush=True)
    sys.stdin.readline()  # the workers run now
    span = DBTaskResult.objects.filter(status="SUCCESSFUL").aggregate(a=Min("started_at"), b=Max("finished_at"))
    done = DBTaskResult.objects.filter(status="SUCCESSFUL").count()
    print(done, (span["b"] - span["a"]).total_seconds() if done else 0, flush=True)
''')


def measure_djtasks(python: str, url: str, jobs: int, workers: list[int]) -> list[dict[str, object]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("djt_settings.py", DJT_SETTINGS), ("djt_tasks.py", DJT_TASKS), ("djt_run.py", DJT_RUN)):
            (Path(tmp) / name).write_text(text)
        env = dict(os.environ, DATABASE_URL=url, DJANGO_SETTINGS_MODULE="djt_settings", PYTHONPATH=tmp)
        for count in workers:
            driver = subprocess.Popen([python, str(Path(tmp) / "djt_run.py"), str(jobs)], env=env, cwd=tmp,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert driver.stdout.readline().strip() == "enqueued"
            procs = [subprocess.Popen([python, "-m", "django", "db_worker", "--batch", "--no-startup-delay",
                                       "--interval", "0.1"],
                                      env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(count)]
            outputs = [p.communicate(timeout=3600) for p in procs]
            out, _ = driver.communicate("go\n", timeout=600)
            done, seconds = out.split()
            locked = sum((o + e).lower().count("database is locked") for o, e in outputs)
            results.append({"workers": count, "jobs": jobs, "done": int(done),
                            "rate": int(done) / float(seconds) if float(seconds) else 0.0, "locked": locked})
    return results


# --- orchestration -------------------------------------------------------------------------------
def run_engine(url: str, args: argparse.Namespace, baseline_url: str | None = None) -> dict[str, object]:
    env = dict(os.environ, DATABASE_URL=url, SECRET_KEY="bench-only", PYTHONPATH=str(REPO),
               SONGSGEN_LOG_LEVEL="WARNING")
    env.pop("DEBUG", None)
    cmd = [sys.executable, __file__, "--measure-ours", "--jobs", str(args.jobs),
           "--workers", *map(str, args.workers)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if args.djtasks_python and Path(args.djtasks_python).exists():
        result["djtasks"] = measure_djtasks(args.djtasks_python, baseline_url or url, args.djtasks_jobs,
                                            args.workers)
    return result


def report(results: dict[str, dict[str, object]]) -> None:
    print("\n| engine | workers | jobs | jobs/s | p50 enqueue→start | p99 | double exec | locked | "
          "django-tasks-db jobs/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for engine, result in results.items():
        peers = {d["workers"]: d for d in result.get("djtasks", [])}
        for drain in result["drains"]:
            peer = peers.get(drain["workers"])
            peer_rate = f"{peer['rate']:.0f}" if peer else "-"
            ratio = f"{drain['rate'] / peer['rate']:.1f}×" if peer and peer["rate"] else "-"
            print(f"| {engine} | {drain['workers']} | {drain['jobs']} | {drain['rate']:.0f} | "
                  f"{drain['p50_ms'] / 1000:.2f} s | {drain['p99_ms'] / 1000:.2f} s | {drain['double_executions']} | "
                  f"{drain['locked']} | {peer_rate} | {ratio} |")
    print()
    for engine, result in results.items():
        print(f"{engine}: enqueue {result['enqueue_rate']:.0f} songs/s through song_requests (batches of 500), "
              f"{result['enqueue_rate_single']:.0f} songs/s through single song_request calls (500 per "
              f"transaction); SIGKILLed worker's job back in the queue after {result['kill_recovery_s']:.1f} s "
              f"(lease {LEASE} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--djtasks-python", default="/tmp/djtasks-venv/bin/python")
    parser.add_argument("--djtasks-jobs", type=int, default=3_000,
                        help="tasks per baseline drain (it runs at a few hundred per second)")
    parser.add_argument("--measure-ours", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(jobs=200, workers=[1], djtasks_python="")  # the peer is not ours to smoke-test
    if args.measure_ours:
        print(json.dumps(measure_ours(args.jobs, args.workers)))
        return 0
    results: dict[str, dict[str, object]] = {}
    if "sqlite" in args.engines:
        with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
            # the baseline gets a file of its own
            results["SQLite"] = run_engine(f"sqlite:///{tmp}/bench.db", args, f"sqlite:///{tmp}/djtasks.db")
    if "postgres" in args.engines:
        from tests.pgserver import find_bindir, postgres_server

        bindir = find_bindir()
        if bindir is None:
            print("PostgreSQL binaries not found; PostgreSQL leg skipped.", file=sys.stderr)
        else:
            with postgres_server(bindir) as url:
                results["PostgreSQL"] = run_engine(url, args)
    print(json.dumps(results, indent=1, default=str), file=sys.stderr)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
