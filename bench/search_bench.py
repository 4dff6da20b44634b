"""Admin song search on a big SQLite database, before and after the text index (songs 0004).

    .venv/bin/python bench/search_bench.py --songs 1000000 --users 20000

Seeds a scratch file (never the development database) at songs 0003, adds a handful of songs with a rare
word, and times what the admin's changelist runs for a search — the first page (100 rows, newest first)
and the capped count — for a rare and a common term: first Django's default search (icontains over title
and suno id, exact username/email over a join), then, after `manage.py migrate songs 0004` built the
index, SongQuerySet.search. Median of --repeat runs; the results must be the same rows.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import SMOKE_HELP, manage, seeded, setup_django, smoke_dir

RARE, COMMON = "quasarine", "heart"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(songs=300, users=20, repeat=1, db=smoke_dir("search") / "search.db")
    db = args.db or Path(f"/tmp/songsgen-bench/search_{args.songs}.db")
    fresh = not db.exists()
    seeded(db, args.songs, args.users, at=("songs", "0003"))
    if not fresh:
        manage(db, "migrate", "songs", "0003", "--plain", "-v0")
    setup_django(db)
    from django.db.models import Q

    from accounts.models import User
    from songs.models import Song

    if not Song.objects.filter(title__contains=RARE.title()).exists():
        owner = User.objects.order_by("pk").first()
        for i in range(5):
            Song.objects.create(user=owner, title=f"{RARE.title()} Nights {i}", genre="pop")

    def page(qs):
        rows = list(qs.order_by("-created_at", "-id")[:100].values_list("pk", flat=True))
        count = qs.order_by()[:1101].count()  # the admin's capped count (songsgen/pagination.py)
        return rows, count

    def default_admin(term):
        return Song.objects.filter(Q(title__icontains=term) | Q(suno_song_id__icontains=term)
                                   | Q(user__username=term) | Q(user__email=term))

    def timed(fn, term):
        times, result = [], None
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = page(fn(term))
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times), result

    before = {term: timed(default_admin, term) for term in (RARE, COMMON)}
    start = time.perf_counter()
    out = manage(db, "migrate", "songs", "0004")
    build = time.perf_counter() - start
    from django.db import connection

    connection.close()
    after = {term: timed(Song.objects.search, term) for term in (RARE, COMMON)}
    print(f"songs: {Song.objects.count():,}; index build (safe migrate songs 0004): {build:.1f} s")
    print(out.stdout.strip().splitlines()[-1])
    for term in (RARE, COMMON):
        (b_ms, b_res), (a_ms, a_res) = before[term], after[term]
        assert b_res == a_res, f"different results for {term!r}"
        print(f"{term!r:12} hits on page {len(a_res[0]):>3}, count {a_res[1]:>5}: default admin {b_ms:8.1f} ms, "
              f"text index {a_ms:7.1f} ms, {b_ms / a_ms:6.1f}x")


if __name__ == "__main__":
    main()
