"""Admin song search on a big SQLite database, before and after the text index (songs 0004).

    .venv/bin/python bench/search_bench.py --songs 1000000 --users 20000

Seeds a scratch file (never the development database) at songs 0003, adds a handful of songs with a rare
word, and times what the admin's changelist runs for a search — the first page (100 rows, newest first)
and the capped count — for a rare and a common term: first Django's default search (icontains over title
and suno id, exact username/email over a join), then, after `manage.py migrate songs 0004` built the
index, SongQuerySet.search. Median of --repeat runs; the results must be the same rows.

Then the search for a user's songs by the start of a username or email (accounts 0003's lower(username)
index and the email's case-insensitive unique index, both in code-point order), against two baselines in
the same run: the exact username/email search it replaced, and Django's own `^user__username` /
`^user__email` search (istartswith over the join). `--users-only` skips the text part (no songs 0004 round trip).
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
    parser.add_argument("--users-only", action="store_true", help="time only the search by the start of a user")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(songs=300, users=20, repeat=1, db=smoke_dir("search") / "search.db")
    db = args.db or Path(f"/tmp/songsgen-bench/search_{args.songs}.db")
    fresh = not db.exists()
    seeded(db, args.songs, args.users, at=("songs", "0003"))
    manage(db, "migrate", "accounts", "--plain", "-v0")  # a file seeded before accounts 0003 gets its index
    if args.users_only:
        manage(db, "migrate", "--plain", "-v0")  # the text index too: search() reads it on SQLite
        setup_django(db)
        user_prefix(args.repeat)
        return
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

    def default_admin(term):
        return Song.objects.filter(Q(title__icontains=term) | Q(suno_song_id__icontains=term)
                                   | Q(user__username=term) | Q(user__email=term))

    before = {term: timed(default_admin, term, args.repeat) for term in (RARE, COMMON)}
    start = time.perf_counter()
    out = manage(db, "migrate", "songs", "0004")
    build = time.perf_counter() - start
    from django.db import connection

    connection.close()
    after = {term: timed(Song.objects.search, term, args.repeat) for term in (RARE, COMMON)}
    print(f"songs: {Song.objects.count():,}; index build (safe migrate songs 0004): {build:.1f} s")
    print(out.stdout.strip().splitlines()[-1])
    for term in (RARE, COMMON):
        (b_ms, b_res), (a_ms, a_res) = before[term], after[term]
        assert b_res == a_res, f"different results for {term!r}"
        print(f"{term!r:12} hits on page {len(a_res[0]):>3}, count {a_res[1]:>5}: default admin {b_ms:8.1f} ms, "
              f"text index {a_ms:7.1f} ms, {b_ms / a_ms:6.1f}x")
    user_prefix(args.repeat)


def page(qs):
    """What the admin's changelist reads: the first page, newest first, and the capped count."""
    rows = list(qs.order_by("-created_at", "-id")[:100].values_list("pk", flat=True))
    count = qs.order_by()[:1101].count()  # songsgen/pagination.py
    return rows, count


def timed(fn, term, repeat):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = page(fn(term))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def user_prefix(repeat: int) -> None:
    """The songs of users found by the start of a username or email, against the same-run baselines."""
    from django.db.models import Q

    from accounts.models import User
    from songs.models import Song

    def exact(term):  # the search before: exact username or email, through the unique indexes
        return Song.objects.filter(user__in=User.objects.filter(Q(username=term) | Q(email=term.lower())).values("pk"))

    def django_prefix(term):  # what search_fields = ("^user__username", "^user__email") would run
        return Song.objects.filter(Q(user__username__istartswith=term) | Q(user__email__istartswith=term))

    username = Song.objects.order_by("pk").values_list("user__username", flat=True).first()  # a seeded user
    first, last, _ = username.split("_", 2)
    terms = {"whole username": username, "first_last_, upper case": f"{first}_{last}_".upper(),
             "first name": first}
    print(f"users: {User.objects.count():,}; search by the start of a username or email (median of {repeat})")
    for label, term in terms.items():
        new_ms, new = timed(Song.objects.search, term, repeat)
        dj_ms, dj = timed(django_prefix, term, repeat)
        assert new == dj, f"different results for {term!r}"
        line = (f"{label:25} {term!r:32} page {len(new[0]):>3}, count {new[1]:>5}: prefix (indexed) "
                f"{new_ms:8.1f} ms, Django's istartswith {dj_ms:9.1f} ms ({dj_ms / new_ms:6.1f}x)")
        if label == "whole username":
            ex_ms, ex = timed(exact, term, repeat)
            assert ex == new, "the exact search and the prefix search differ on a whole username"
            line += f", the old exact search {ex_ms:7.1f} ms"
        print(line)


if __name__ == "__main__":
    main()
