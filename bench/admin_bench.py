"""Time the song admin on a big SQLite database against Django's default ModelAdmin, in the same run.

    DEBUG=1 .venv/bin/python bench/admin_bench.py --sizes 100000,1000000 --users 20000

Seeds a scratch SQLite file (never the development database) with `seed_demo`, size after size, and at each
size requests every page with Django's test Client as a logged-in superuser: our SongAdmin at /admin/ and a
plain `admin.ModelAdmin` with the same columns, filters and search on a throwaway AdminSite at
/default-admin/. Each page is fetched twice to warm up, then timed `--requests` times; the median is reported,
with the number of SQL queries the page ran. At the largest size the changelist's queries are shown with
their EXPLAIN QUERY PLAN and their own times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench._common import SMOKE_HELP, smoke_dir  # noqa: E402
from songsgen.cli import positive_int  # noqa: E402

DEFAULT_DB = Path("/tmp/songsgen-bench/admin_bench.db")
URLCONF = "bench_admin_urls"

# Targets from the issue, for the largest size: the slowest median allowed per page, in ms, ...
TARGET_MS = {"list": 50.0, "status=pending": 50.0, "status=failed": 50.0, "page 500": 100.0, "change": 20.0}
TARGET_SPEEDUP = 20.0  # ... at least this many times faster than the default admin
TARGET_GROWTH = 1.2  # ... and at the largest size, at most this many times its own time at the smallest


def sizes_arg(value: str) -> list[int]:
    """argparse type: comma-separated positive song counts, e.g. 100000,1000000."""
    try:
        sizes = [int(part.replace("_", "")) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {value!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {value!r}")
    return sorted(set(sizes))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=positive_int, default=1_000_000,
                        help="Songs to measure at, when --sizes is not given (default 1,000,000).")
    parser.add_argument("--sizes", type=sizes_arg, default=None,
                        help="Comma-separated song counts, seeded incrementally, e.g. 100000,1000000.")
    parser.add_argument("--users", type=positive_int, default=20_000,
                        help="Users at the largest size; smaller sizes get their share (default 20,000).")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB,
                        help=f"Scratch SQLite file, recreated on each run (default {DEFAULT_DB}).")
    parser.add_argument("--requests", type=positive_int, default=15, help="Timed requests per page (default 15).")
    parser.add_argument("--warmups", type=int, default=2, help="Untimed requests per page first (default 2).")
    parser.add_argument("--seed", type=int, default=1, help="seed_demo's random seed (default 1).")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; no target is judged")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.users, args.requests, args.warmups = [300], 30, 1, 0
        if args.db == DEFAULT_DB:  # never the file a real run seeded
            args.db = smoke_dir("admin") / "admin_bench.db"
    args.sizes = args.sizes or [args.songs]
    args.db = args.db.resolve()
    if args.db == (BASE_DIR / "data" / "songs.db").resolve():
        parser.error("--db must not be the development database; give a scratch file.")
    return args


def configure_django(db: Path) -> None:
    """Point settings at the scratch file before Django reads them; start from an empty file."""
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        leftover.unlink(missing_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["SONGSGEN_DATA_DIR"] = str(db.parent)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    import django

    django.setup()


# --- everything below runs with Django set up --------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One page under one admin: median wall and CPU milliseconds, and the queries one request ran."""

    median_ms: float
    cpu_ms: float  # this process's CPU time (SQLite runs in it): what other load on the machine cannot inflate
    queries: int


@dataclass(frozen=True)
class Page:
    name: str
    path: str  # below the admin's prefix


# Our list's display methods and the model field each one shows: the default admin lists the plain field.
SHOWN_FIELD = {"song_title": "title", "owner": "user", "status_badge": "status", "created": "created_at",
               "completed": "completed_at", "plays": "play_count"}


def baseline_columns(list_display: Sequence[Any], model: Any) -> tuple[str, ...]:
    """Our columns as model fields only: a display method of ours does not exist on a plain ModelAdmin."""
    fields = {field.name for field in model._meta.get_fields()}
    columns = []
    for column in list_display:
        name = SHOWN_FIELD.get(column, column) if isinstance(column, str) else None
        if name in fields and name not in columns:
            columns.append(name)
    return tuple(columns) or ("__str__",)


def build_urlconf() -> None:
    """A URLconf with our admin at /admin/ and a default ModelAdmin for Song at /default-admin/."""
    from django.contrib import admin
    from django.urls import path

    from songs.admin import SongAdmin
    from songs.models import Song

    class DefaultSongAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
        """What the admin gives without our choices: the same columns, filters and search."""

        list_display = baseline_columns(SongAdmin.list_display, Song)
        list_filter = ("status", "genre")
        search_fields = SongAdmin.search_fields

    default_site = admin.AdminSite(name="default_admin")
    default_site.register(Song, DefaultSongAdmin)
    module = types.ModuleType(URLCONF)
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("admin/", admin.site.urls),
        path("default-admin/", default_site.urls),
    ]
    sys.modules[URLCONF] = module


@contextmanager
def serving() -> Iterator[None]:
    """Both admins routed; the test Client's host allowed; DEBUG off so timings carry no query logging."""
    from django.conf import settings
    from django.test.utils import override_settings

    with override_settings(ROOT_URLCONF=URLCONF, DEBUG=False, ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
        yield


def measure_pair(client: Any, path: str, requests: int, warmups: int) -> tuple[Timing, Timing]:
    """Our admin and the default one on the same page, requests alternating so both see the same load."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    urls = ("/admin/" + path, "/default-admin/" + path)

    def get(url: str) -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}; the benchmark needs every page to load.")

    for _ in range(warmups):
        for url in urls:
            get(url)
    wall: dict[str, list[float]] = {url: [] for url in urls}
    cpu: dict[str, list[float]] = {url: [] for url in urls}
    for _ in range(requests):
        for url in urls:
            began, began_cpu = time.perf_counter(), time.process_time()
            get(url)
            wall[url].append((time.perf_counter() - began) * 1000)
            cpu[url].append((time.process_time() - began_cpu) * 1000)
    timings = []
    for url in urls:
        with CaptureQueriesContext(connection) as captured:
            get(url)
        timings.append(Timing(statistics.median(wall[url]), statistics.median(cpu[url]), len(captured)))
    return timings[0], timings[1]


def seed_to(songs: int, users: int, seed: int, out: Callable[[str], None]) -> None:
    """Append demo rows until the database holds `songs` songs and `users` seeded users."""
    from io import StringIO

    from django.core.management import call_command

    from accounts.models import User
    from songs.models import Song

    have_songs = Song.objects.count()
    have_users = User.objects.filter(is_superuser=False).count()
    log = StringIO()
    began = time.perf_counter()
    call_command("seed_demo", users=max(0, users - have_users), songs=songs - have_songs, seed=seed, stdout=log)
    out(f"seeded {songs - have_songs:,} songs, {max(0, users - have_users):,} users in "
        f"{time.perf_counter() - began:.1f} s -> {songs:,} songs")


def pages_for(songs: int, song_id: int) -> list[Page]:
    """The pages timed at a size; page 500 only exists from 500 full pages of songs on."""
    from songs.admin import SongAdmin

    pages = [
        Page("list", "songs/song/"),
        Page("status=pending", "songs/song/?status__exact=pending"),
        Page("status=failed", "songs/song/?status__exact=failed"),
    ]
    if songs >= 500 * SongAdmin.list_per_page:
        pages.append(Page("page 500", "songs/song/?p=500"))
    return [
        *pages,
        Page("change", f"songs/song/{song_id}/change/"),
        # No target set; shown because no index starts with genre: the rarest genre, and one no song has.
        Page("genre=classical", "songs/song/?genre=classical"),
        Page("genre=zydeco (none)", "songs/song/?genre=zydeco"),
    ]


def sample_song_id() -> int:
    """A failed song from the middle of the table: its page shows a queue entry in the inline."""
    from django.db.models import Max

    from songs.models import Song

    middle = (Song.objects.aggregate(top=Max("id"))["top"] or 0) // 2
    song = Song.objects.failed().filter(id__gte=middle).order_by("id").only("id").first()
    if song is None:
        raise SystemExit("No failed song to open; seed more songs.")
    return int(song.pk)


def explain(client: Any, pages: Sequence[Page], out: Callable[[str], None]) -> None:
    """Each changelist query of ours on songs: its median time run alone, and SQLite's plan for it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for page in pages:
        if page.name == "change":
            continue
        with CaptureQueriesContext(connection) as captured:
            client.get("/admin/" + page.path)
        out(f"\n-- {page.name}: /admin/{page.path}")
        for query in captured.captured_queries:
            sql = query["sql"]
            if "songs_song" not in sql:
                continue
            with connection.cursor() as cursor:
                times = []
                for _ in range(5):
                    began = time.perf_counter()
                    cursor.execute(sql)
                    cursor.fetchall()
                    times.append((time.perf_counter() - began) * 1000)
                cursor.execute("EXPLAIN QUERY PLAN " + sql)
                plan = [row[-1] for row in cursor.fetchall()]
            out(f"   {statistics.median(times):7.2f} ms  {sql[:200]}{' …' if len(sql) > 200 else ''}")
            for step in plan:
                out(f"              {step}")


def verdict_for(name: str, ours: Timing, speedup: float) -> str:
    """'ok', which target this page misses, or 'info' for a page without targets."""
    if name not in TARGET_MS:
        return "info"
    if ours.median_ms > TARGET_MS[name]:
        return f"MISS > {TARGET_MS[name]:.0f} ms"
    if speedup < TARGET_SPEEDUP:
        return f"MISS < {TARGET_SPEEDUP:.0f}x"
    return "ok"


def load() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine shows in wall times."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def table(rows: list[list[str]], out: Callable[[str], None]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        out("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if number == 0:
            out("  ".join("-" * width for width in widths))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    configure_django(args.db)
    from django.core.management import call_command
    from django.test import Client

    from accounts.models import User

    out(f"database: {args.db}  sizes: {', '.join(f'{s:,}' for s in args.sizes)}  users at largest: "
        f"{args.users:,}  requests: {args.warmups} warm-up + {args.requests} timed (median)  cpus: {os.cpu_count()}  "
        f"load average: {load()}")
    call_command("migrate", interactive=False, verbosity=0, safe=False)
    admin_user = User.objects.create_superuser("bench-admin", "bench-admin@example.com", "bench-password")
    build_urlconf()
    client = Client()
    client.force_login(admin_user)

    results: dict[int, dict[str, tuple[Timing, Timing]]] = {}
    misses: list[str] = []
    largest = args.sizes[-1]
    for size in args.sizes:
        seed_to(size, max(1, round(args.users * size / largest)), args.seed, out)
        pages = pages_for(size, sample_song_id())
        with serving():
            results[size] = {page.name: measure_pair(client, page.path, args.requests, args.warmups)
                             for page in pages}
        out(f"\n== {size:,} songs ==")
        rows = [["page", "ours ms", "default ms", "default/ours", "ours cpu ms", "ours queries", "default queries",
                 "target"]]
        for name, (ours, default) in results[size].items():
            speedup = default.median_ms / ours.median_ms
            verdict = verdict_for(name, ours, speedup) if size == largest else "-"
            if verdict.startswith("MISS"):
                misses.append(f"{size:,} songs, {name}: {verdict}")
            rows.append([name, f"{ours.median_ms:.1f}", f"{default.median_ms:.1f}", f"{speedup:.1f}x",
                         f"{ours.cpu_ms:.1f}", str(ours.queries), str(default.queries), verdict])
        table(rows, out)
        if size == largest:
            out(f"\n== our changelist queries at {size:,} songs (time, EXPLAIN QUERY PLAN) ==")
            with serving():
                explain(client, pages, out)

    if len(args.sizes) > 1:
        smallest = args.sizes[0]
        out(f"\n== ours at {largest:,} / ours at {smallest:,} ==")
        rows = [["page", f"{smallest:,} ms", f"{largest:,} ms", "ratio", "cpu ratio", "target"]]
        for name, (ours_large, _) in results[largest].items():
            if name not in results[smallest]:
                continue
            ours_small = results[smallest][name][0]
            ratio = ours_large.median_ms / ours_small.median_ms
            if name not in TARGET_MS:
                verdict = "info"
            else:
                verdict = "ok" if ratio <= TARGET_GROWTH else f"MISS > {TARGET_GROWTH}x"
            if verdict.startswith("MISS"):
                misses.append(f"{name}: {ratio:.2f}x its time at {smallest:,}")
            rows.append([name, f"{ours_small.median_ms:.1f}", f"{ours_large.median_ms:.1f}", f"{ratio:.2f}x",
                         f"{ours_large.cpu_ms / ours_small.cpu_ms:.2f}x", verdict])
        table(rows, out)

    out(f"\nload average at the end: {load()}; with more runnable processes than CPUs, wall times include "
        "waiting for a CPU: compare the cpu columns.")
    if args.smoke:
        out("\nsmoke run: every page loaded; targets are judged at full size only")
        return 0
    out("\nall targets met" if not misses else "\ntargets missed:\n  " + "\n  ".join(misses))
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
