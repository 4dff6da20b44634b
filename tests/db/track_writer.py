"""A stand-in for an application writing through an online rebuild of tests/online_fixture's track table:
`python -m tests.db.track_writer DB OUT STOP PARENTS` inserts, updates and deletes rows of its own with raw
sqlite3 (the application's busy timeout) until the file STOP exists, appending each commit to OUT as
`I|U|D<TAB>id<TAB>name<TAB>size<TAB>seconds waited` (`ERROR<TAB>message` for a failed one), so a test can
check that the rebuilt table holds every commit's last values and that no id was handed out twice."""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import time
from pathlib import Path

TRACK = "online_fixture_track"
BUSY_SECONDS = int(os.environ.get("SONGSGEN_SQLITE_BUSY_TIMEOUT", "10000")) / 1000  # the app's default


def write_once(conn: sqlite3.Connection, n: int, mine: list[int], parents: int) -> tuple[str, int, str, int]:
    """One write transaction: insert, update or delete one of its own rows; (kind, id, name, size)."""
    conn.execute("BEGIN IMMEDIATE")
    step = n % 4
    if step in (0, 1) or len(mine) < 3:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({TRACK})")}
        # After 0004 the table has `loud`, NOT NULL without a database default, as the app's new code writes it.
        extra = ", loud" if "loud" in columns else ""
        name, size = f"writer {n}", n
        cur = conn.execute(f"INSERT INTO {TRACK} (name, size, parent_id{extra}) VALUES (?, ?, ?{', 0' * bool(extra)})",
                           (name, size, random.randint(1, parents)))
        mine.append(int(cur.lastrowid or 0))
        return "I", mine[-1], name, size
    if step == 2:
        pk = random.choice(mine)
        name, size = f"writer {n} (updated)", n * 10
        conn.execute(f"UPDATE {TRACK} SET name = ?, size = ? WHERE id = ?", (name, size, pk))
        return "U", pk, name, size
    # Half the deletes take the newest row: a rebuild that restarted the id counter would hand its id out again.
    pk = mine.pop() if n % 8 == 3 else mine.pop(random.randrange(len(mine)))
    conn.execute(f"DELETE FROM {TRACK} WHERE id = ?", (pk,))
    return "D", pk, "", 0


def main(db: str, out: Path, stop: Path, parents: int) -> None:
    conn = sqlite3.connect(db, timeout=BUSY_SECONDS, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    mine: list[int] = []
    with open(out, "a", buffering=1) as log:
        n = 0
        while not stop.exists():
            n += 1
            started = time.monotonic()
            try:
                kind, pk, name, size = write_once(conn, n, mine, parents)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                log.write(f"ERROR\t{type(exc).__name__}: {exc}\n")
            else:
                log.write(f"{kind}\t{pk}\t{name}\t{size}\t{time.monotonic() - started:.4f}\n")
            time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
