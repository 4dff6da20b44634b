"""/metrics and /health at 1M songs: each scrape query's time and plan, against the naive queries they replace.

    python bench/monitoring_bench.py [--db PATH] [--songs 1000000] [--users 20000] [--finished 1000000]
    python -m tests.pgserver -- .venv/bin/python bench/monitoring_bench.py     # the same on PostgreSQL

Seeds a scratch SQLite file (or the PostgreSQL database DATABASE_URL names) with `seed_demo` (once), adds
`--finished` done and failed jobs spread over two years (3,000 of them within the last hour), then requests
/metrics and /health with Django's test client and times every query a scrape runs (median of 7) with its
plan. Baseline, same run: the unbounded queries a naive exporter would run (COUNT(*) over the songs and the
done jobs, MIN(queued_at) of the queue).
Exits 1 when a scrape query takes more than 10 ms, or reads songs_song.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASE_DIR, SMOKE_HELP, seeded, setup_django, smoke_dir  # noqa: E402

TARGET_MS = 10.0
NAIVE = {
    "COUNT(*) songs": "SELECT COUNT(*) FROM songs_song",
    "COUNT(*) done jobs": "SELECT COUNT(*) FROM queueing_generationqueue WHERE status = 'done'",
    "MIN(queued_at)": "SELECT MIN(queued_at) FROM queueing_generationqueue WHERE status = 'queued'",
}


def add_finished(count: int) -> None:
    """Done and failed jobs (3% failed), finished over two years, 3,000 within the last hour."""
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM queueing_generationqueue WHERE status = 'done' LIMIT 1")
        if cursor.fetchone():
            return refresh_last_hour()
        cursor.execute("SELECT COALESCE(MAX(id), 0), (SELECT MAX(id) FROM songs_song) FROM queueing_generationqueue")
        first, songs = cursor.fetchone()
    rnd, now = random.Random(7), datetime.now(UTC).replace(tzinfo=None)
    sql = ("INSERT INTO queueing_generationqueue (id, priority, retry_count, max_retries, status, error_message, "
           "queued_at, started_at, completed_at, song_id, worker_id) VALUES (%s, 0, 0, 3, %s, '', %s, %s, %s, %s, 'w')")
    for start in range(0, count, 50_000):
        rows = []
        for i in range(start, min(count, start + 50_000)):
            ago = rnd.uniform(0, 3600) if i < 3000 else rnd.uniform(3600, 730 * 86400)
            done = now - timedelta(seconds=ago)
            began = done - timedelta(seconds=rnd.uniform(0.5, 120))
            rows.append((first + 1 + i, "failed" if rnd.random() < 0.03 else "done", began - timedelta(seconds=5),
                         began, done, 1 + i % songs))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def refresh_last_hour(count: int = 3000) -> None:
    """A database seeded earlier: its newest finished jobs move back into the last hour, as when seeded."""
    from django.db import connection, transaction

    rnd, now = random.Random(11), datetime.now(UTC).replace(tzinfo=None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM queueing_generationqueue WHERE status IN ('done', 'failed') "
                       "ORDER BY completed_at DESC LIMIT %s", [count])
        ids = [row[0] for row in cursor.fetchall()]
    rows = []
    for pk in ids:
        done = now - timedelta(seconds=rnd.uniform(0, 3600))
        rows.append((done - timedelta(seconds=rnd.uniform(0.5, 120)), done, pk))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany("UPDATE queueing_generationqueue SET started_at = %s, completed_at = %s WHERE id = %s", rows)


def timed(sql: str, runs: int = 7) -> float:
    from django.db import connection

    samples = []
    with connection.cursor() as cursor:
        for _ in range(runs):
            tick = time.perf_counter()
            cursor.execute(sql)
            cursor.fetchall()
            samples.append(time.perf_counter() - tick)
    return statistics.median(samples) * 1000


def plan(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}" if connection.vendor == "sqlite" else f"EXPLAIN {sql}")
        return [row[-1] for row in cursor.fetchall()]


def postgres_seeded(songs: int, users: int) -> None:
    """Migrate and seed the PostgreSQL database DATABASE_URL names, unless it holds songs already."""
    env = dict(os.environ, SECRET_KEY=os.environ.get("SECRET_KEY", "bench-only"), DEBUG="1")

    def manage(*args: str) -> str:
        return subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], env=env, cwd=BASE_DIR,
                              check=True, capture_output=True, text=True).stdout

    manage("migrate", "--plain", "-v0")
    count = "from songs.models import Song; print(Song.objects.exists())"
    if manage("shell", "-v0", "-c", count).strip() != "True":
        manage("seed_demo", "--users", str(users), "--songs", str(songs), "--seed", "7", "-v0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/songsgen-bench/monitoring_bench.db"))
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(db=smoke_dir("monitoring") / "monitoring_bench.db", songs=300, users=20, finished=300)
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        postgres_seeded(args.songs, args.users)
        os.environ.update(DJANGO_SETTINGS_MODULE="songsgen.settings", DEBUG="1",
                          SONGSGEN_DATA_DIR=str(args.db.parent), SECRET_KEY=os.environ.get("SECRET_KEY", "bench-only"))
        sys.path.insert(0, str(BASE_DIR))
        import django

        django.setup()
    else:
        seeded(args.db, args.songs, args.users)
        setup_django(args.db)
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    add_finished(args.finished)
    client = Client(HTTP_HOST="localhost")
    for path in ("/metrics", "/health?format=json"):
        client.get(path)  # warm-up
        samples = []
        for _ in range(7):
            tick = time.perf_counter()
            status = client.get(path).status_code
            samples.append(time.perf_counter() - tick)
        print(f"{path:<22} HTTP {status}  median {statistics.median(samples) * 1000:7.1f} ms (whole request)")
    with CaptureQueriesContext(connection) as captured:
        client.get("/metrics")
    misses = []
    print(f"\n{'ms':>8}  query (a /metrics scrape, {len(captured.captured_queries)} queries)")
    for query in captured.captured_queries:
        sql = query["sql"]
        if not sql.startswith(("SELECT", "WITH")) or "pg_" in sql:
            continue  # PRAGMAs, the catalogue's sizes, BEGIN/COMMIT around them
        ms = timed(sql)
        print(f"{ms:8.2f}  {sql[:140]}")
        for line in plan(sql):
            print(f"{'':10}{line}")
        if (ms > TARGET_MS and not args.smoke) or "songs_song" in sql:  # a smoke run judges no time
            misses.append(sql[:80])
    print("\nbaseline: the naive queries")
    for name, sql in NAIVE.items():
        print(f"{timed(sql, runs=3):8.2f}  {name}")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    if misses:
        print(f"MISSED the {TARGET_MS:g} ms target or read songs_song: {misses}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
