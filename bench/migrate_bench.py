"""Backfill and migrate on a big SQLite database.

    .venv/bin/python bench/migrate_bench.py --sizes 250000,1000000 --users 20000

1. The analytics_data backfill (songs 0003) with songsgen/db/migrate/backfill.py — keyset batches, one UPDATE per
   batch — against the seed's pattern: LIMIT/OFFSET batches with one UPDATE per row, time-boxed, plus the
   time of one OFFSET batch near the start and near the end of the table (it grows with the offset).
2. At the largest size: Django's plain `migrate` of one migration (accounts 0002) against our safe
   `migrate` of the same migration, with the safe path's own breakdown (safety, backup, apply, verify).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

from _common import SMOKE_HELP, manage, seeded, smoke_dir

BATCH = 1000


def reset(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE songs_song SET analytics_data = '{}'")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def helper_rate(db: Path) -> tuple[int, float]:
    reset(db)
    code = (
        "from django.db import connection; from songsgen.db.migrate.backfill import backfill; import time; "
        "t = time.perf_counter(); "
        "n=backfill(connection, table='songs_song', set_sql=\"analytics_data = json_object('plays', play_count, "
        "'likes', 0)\", pending=\"analytics_data IS NULL OR analytics_data = '{}'\"); "
        "print(n, time.perf_counter()-t)"
    )
    out = manage(db, "shell", "-c", code).stdout.strip().splitlines()[-1].split()
    return int(out[0]), float(out[1])


def naive_rate(db: Path, budget: float) -> tuple[int, float, float, float]:
    """LIMIT/OFFSET batches, one UPDATE per row, for `budget` seconds; also one batch at the table's end."""
    reset(db)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    done, offset, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        rows = con.execute("SELECT id, play_count FROM songs_song ORDER BY id LIMIT ? OFFSET ?", (BATCH, offset))
        rows = rows.fetchall()
        if not rows:
            break
        con.execute("BEGIN IMMEDIATE")
        for pk, plays in rows:
            con.execute("UPDATE songs_song SET analytics_data = ? WHERE id = ?",
                        (json.dumps({"plays": plays, "likes": 0}), pk))
        con.execute("COMMIT")
        done, offset = done + len(rows), offset + BATCH
    elapsed = time.perf_counter() - start
    total = con.execute("SELECT COUNT(*) FROM songs_song").fetchone()[0]

    def one_batch(at: int) -> float:
        t = time.perf_counter()
        rows = con.execute("SELECT id, play_count FROM songs_song ORDER BY id LIMIT ? OFFSET ?", (BATCH, at)).fetchall()
        con.execute("BEGIN IMMEDIATE")
        for pk, plays in rows:
            con.execute("UPDATE songs_song SET analytics_data = ? WHERE id = ?",
                        (json.dumps({"plays": plays, "likes": 0}), pk))
        con.execute("COMMIT")
        return time.perf_counter() - t

    first, last = one_batch(0), one_batch(max(total - BATCH, 0))
    con.close()
    return done, elapsed, first, last


def migrate_overhead(db: Path) -> None:
    manage(db, "migrate", "accounts", "0001", "--plain", "-v0")
    start = time.perf_counter()
    manage(db, "migrate", "accounts", "0002", "--plain", "-v0")
    plain = time.perf_counter() - start
    manage(db, "migrate", "accounts", "0001", "--plain", "-v0")
    start = time.perf_counter()
    out = manage(db, "migrate", "accounts", "0002", "--json")
    safe = time.perf_counter() - start
    report = json.loads(out.stdout)
    size = db.stat().st_size / 2**20
    print(f"migrate accounts 0002 on a {size:,.0f} MiB database: plain {plain:.2f} s, safe {safe:.2f} s "
          f"(+{safe - plain:.2f} s); safe path: " + ", ".join(f"{k} {v:.2f} s" for k, v in report["seconds"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--naive-seconds", type=float, default=30.0)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(sizes="300", users=20, naive_seconds=1.0)
    scratch = smoke_dir("migrate") if args.smoke else Path("/tmp/songsgen-bench")
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        db = scratch / f"migrate_{size}.db"
        seeded(db, size, args.users)
        rows, secs = helper_rate(db)
        done, elapsed, first, last = naive_rate(db, args.naive_seconds)
        print(f"{size:>9,} songs: helper {rows:,} rows in {secs:.1f} s = {rows / secs:,.0f} rows/s; "
              f"LIMIT/OFFSET+row UPDATEs {done:,} rows in {elapsed:.0f} s = {done / elapsed:,.0f} rows/s "
              f"(would need {size / (done / elapsed) / 60:,.1f} min); one batch of {BATCH} at offset 0: "
              f"{first * 1000:.0f} ms, at the end: {last * 1000:.0f} ms")
    migrate_overhead(scratch / f"migrate_{sizes[-1]}.db")


if __name__ == "__main__":
    main()
