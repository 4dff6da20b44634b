"""Load processes for live_migrate_bench.py: a paced writer, an admin reader, and small database queries.

    python bench/_load.py writer OUT STOP [--rate 200] [--tag NAME]
    python bench/_load.py reader OUT STOP
    python bench/_load.py plan | prepare | fits | audit LOG...

The load is the release that runs while a migration applies. Where today's models fit the schema the
database is at (the same columns in the three tables the load touches), that is today's code: the writer
calls `song_request`, the reader requests the songs admin list. Where they do not (songs 0002-0004 and
queueing 0002-0003 unapplied), it is the previous release: the models of the migration state the database
is at, as Django's migrations build them, doing what `song_request` does (a song and its queued job in one
transaction) and reading a page of the newest songs with their users; the harness runs that release's worker
if it had one. Either way the load keeps running after the migration applies, as an old release does until
the new one is deployed: a migration that breaks the previous release's writes shows as writer errors "after".

Django is configured from the environment (DATABASE_URL, DJANGO_SETTINGS_MODULE), so every process sees
the database the harness migrates. Results go to OUT as JSON lines, one per event, wall-clock seconds
(time.time()) so the harness can line them up with its own migrate window; the process stops when the
file STOP exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
ADMIN_USER = "bench-live-admin"
APPS = ("accounts", "songs", "queueing")
LOAD_MODELS = (("accounts", "User"), ("songs", "Song"), ("queueing", "GenerationQueue"))


def _django() -> None:
    """Set Django up from the environment, as manage.py would."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    import django

    django.setup()


def _emit(out: IO[str], **event: Any) -> None:
    out.write(json.dumps(event) + "\n")


def _recover() -> None:
    """Drop a connection an error broke (a lost server, an aborted transaction); keep a healthy one."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        try:
            if conn.connection is not None and (conn.needs_rollback or not conn.is_usable()):
                conn.close()
        except Exception:  # noqa: BLE001 - the next call reconnects anyway
            pass


def _state_apps() -> Any:
    """The models of the migration state the database is at: what the release before its next migration ran on."""
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connection)
    applied = set(loader.applied_migrations or {})
    latest = [node for node in applied if node[0] in APPS
              and not any(child.key in applied for child in loader.graph.node_map[node].children)]
    return loader.project_state(latest, at_end=True).apps


def _fits() -> bool:
    """Whether today's models have exactly the columns the database has in the tables the load touches."""
    from django.apps import apps as today

    state = _state_apps()
    return all({f.column for f in today.get_model(app, name)._meta.concrete_fields}
               == {f.column for f in state.get_model(app, name)._meta.concrete_fields}
               for app, name in LOAD_MODELS)


def _previous_release_request() -> Any:
    """song_request as the previous release's models do it: the song and its queued job, one transaction."""
    from django.db import transaction

    state = _state_apps()
    song_model, job_model = state.get_model("songs", "Song"), state.get_model("queueing", "GenerationQueue")

    def request(*, user: Any, title: str, genre: str) -> Any:
        with transaction.atomic():
            song = song_model.objects.create(user_id=user.pk, title=title, genre=genre)
            job_model.objects.create(song_id=song.pk)
        return song

    return request


def writer(out_path: Path, stop: Path, rate: float, tag: str) -> None:
    """Call song_request at `rate` per second on a fixed schedule; one line per commit or error."""
    _django()
    from accounts.models import User
    from songs.services import song_request

    release = "today" if _fits() else "previous"
    request = song_request if release == "today" else _previous_release_request()
    user = User.objects.order_by("pk").only("pk").first()
    assert user is not None, "the database has no user to request songs for"
    interval, start = 1.0 / rate, time.time()
    with out_path.open("w", buffering=1) as out:
        _emit(out, kind="start", t=start, pid=os.getpid(), rate=rate, release=release)
        i = 0
        while not stop.exists():
            due = start + i * interval  # the schedule: a slow commit delays the next ones, never skips them
            now = time.time()
            if now < due:
                time.sleep(due - now)
            title = f"live {tag} {os.getpid()} {i}"
            try:
                song = request(user=user, title=title, genre="pop")
            except Exception as exc:  # noqa: BLE001 - every failure is a data point
                _emit(out, kind="error", due=due, t=time.time(), error=f"{type(exc).__name__}: {exc}"[:300])
                _recover()
            else:
                done = time.time()
                _emit(out, kind="ok", due=due, t=done, lat=done - due, id=song.pk, title=title)
            i += 1
        _emit(out, kind="stop", t=time.time(), scheduled=i)


def reader(out_path: Path, stop: Path) -> None:
    """Request the songs changelist as a superuser (the previous release: its newest songs), back to back."""
    _django()
    from django.test import Client
    from django.test.utils import setup_test_environment

    from accounts.models import User

    setup_test_environment()  # lets the test Client's host in; nothing else of the test runner
    admin = User.objects.get(username=ADMIN_USER)
    client = Client(raise_request_exception=False)
    client.force_login(admin)
    release = "today" if _fits() else "previous"
    songs = _state_apps().get_model("songs", "Song").objects.select_related("user").order_by("-pk")

    def page() -> str:
        if release == "previous":
            list(songs[:100])  # the admin's page size
            return ""
        status = client.get("/admin/songs/song/").status_code
        return "" if status == 200 else f"HTTP {status}"

    with out_path.open("w", buffering=1) as out:
        _emit(out, kind="start", t=time.time(), pid=os.getpid(), release=release)
        while not stop.exists():
            began = time.time()
            try:
                error = page()
            except Exception as exc:  # noqa: BLE001
                error = f"{type(exc).__name__}: {exc}"[:300]
                _recover()
            done = time.time()
            _emit(out, kind="error" if error else "ok", due=began, t=done, lat=done - began, error=error)
            time.sleep(0.25)  # four pages a second at most: a steady reader that leaves the writer a core


def plan() -> None:
    """Print the migrations of APPS after their first, in dependency order, as JSON [[app, name, prev]]."""
    _django()
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    graph = MigrationLoader(connection).graph
    order: list[tuple[str, str]] = []
    for leaf in graph.leaf_nodes():
        order += [node for node in graph.forwards_plan(leaf) if node not in order]
    steps = []
    for app, name in order:
        if app not in APPS:
            continue
        parents = [p for p in graph.node_map[(app, name)].parents if p.key[0] == app]
        if parents:  # not the app's first migration
            steps.append([app, name, parents[0].key[1]])
    print(json.dumps(steps))


def prepare() -> None:
    """Create the reader's superuser (once per database)."""
    _django()
    from accounts.models import User

    if not User.objects.filter(username=ADMIN_USER).exists():
        User.objects.create_superuser(username=ADMIN_USER, email="bench-live@example.com", password="x" * 20)


def fits() -> None:
    """Print whether today's code fits the schema the database is at (JSON true/false)."""
    _django()
    print(json.dumps(_fits()))


def audit(logs: list[Path]) -> None:
    """Check every commit the writers saw: still there with its title, its id given once? Print JSON counts."""
    _django()
    from songs.models import Song

    commits: list[tuple[int, str]] = []
    for log in logs:
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event["kind"] == "ok":
                commits.append((event["id"], event["title"]))
    ids = sorted({pk for pk, _ in commits})
    now: dict[int, str] = {}
    for first in range(0, len(ids), 500):
        now.update(Song.objects.filter(pk__in=ids[first:first + 500]).values_list("pk", "title"))
    # A failed plan that kept its 0002 would leave " (touched)" on a title: changed, but the same row.
    lost = [(pk, title) for pk, title in commits if now.get(pk) not in (title, title + " (touched)")]
    counts: dict[int, int] = {}
    for pk, _ in commits:
        counts[pk] = counts.get(pk, 0) + 1
    twice = {pk for pk, n in counts.items() if n > 1}
    reused = twice | {pk for pk, _ in lost if pk in now}
    missing = sum(pk not in now for pk, _ in lost)
    print(json.dumps({"committed": len(commits), "lost": len(lost), "lost_missing": missing,
                      "reused": len(reused), "given_twice": len(twice), "first_lost": lost[:3],
                      "first_reused": sorted(reused)[:5]}))


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["writer", "reader", "plan", "prepare", "fits", "audit"])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--tag", default="w")
    args = parser.parse_args()
    if args.mode == "writer":
        writer(args.paths[0], args.paths[1], args.rate, args.tag)
    elif args.mode == "reader":
        reader(args.paths[0], args.paths[1])
    elif args.mode == "plan":
        plan()
    elif args.mode == "prepare":
        prepare()
    elif args.mode == "fits":
        fits()
    else:
        audit(args.paths)


if __name__ == "__main__":
    main()
