"""Realistic demo data, written fast: users, songs over two years, unfinished songs' queue entries.

Bulk writes below the ORM with explicit ids: meant for an idle database.
"""

from __future__ import annotations

import random
import secrets
import string
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.hashers import make_password
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Max

from accounts.models import User
from queueing.models import GenerationQueue
from songs.demo_audio import demo_audio_path, write_demo_audio
from songs.demo_content import ERRORS, Pools, build_pools
from songs.models import Song
from songsgen.db.fields import column_of
from songsgen.progress import Progress

DEMO_PASSWORD = "demo-password"  # every seeded user's password; they are demo accounts
HISTORY_DAYS = 730  # songs and users are spread over the two years before now
DEFAULT_BATCH_SIZE = 50_000

Row = tuple[Any, ...]


class SeedError(Exception):
    """The seed cannot run as asked (for example songs but no user to own them)."""


@dataclass(frozen=True)
class SeedResult:
    """What one seed wrote."""

    users: int
    songs: int
    queue_entries: int
    token: str  # the run token in every seeded username and email
    seconds: float


# --- writing rows
# -------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)  # naive UTC: timestamps are computed as seconds since it


def _columns(model: type[models.Model], fields: Sequence[str]) -> tuple[str, list[str]]:
    """The table and column names of `fields`, from the model's _meta."""
    return model._meta.db_table, [column_of(model, name) for name in fields]


class _Writer:
    """Bulk inserts below the ORM, for one database vendor."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection

    def timestamp(self, seconds: float) -> str:
        """A UTC instant (seconds since the epoch) as the text the database stores."""
        return (_EPOCH + timedelta(seconds=seconds)).isoformat(" ")

    def insert(self, model: type[models.Model], fields: Sequence[str], rows: list[Row]) -> None:
        raise NotImplementedError

    @contextmanager
    def session(self) -> Iterator[None]:
        """Settings held for the whole seed."""
        yield

    def reset_sequences(self, models_written: Sequence[type[models.Model]]) -> None:
        """Make the database's own id generation continue after the ids we gave."""

    def analyze(self) -> None:
        """Refresh the planner's statistics after the load: the tables grew by magnitudes."""
        with self.connection.cursor() as cursor:
            cursor.execute("ANALYZE")


class _SQLiteWriter(_Writer):
    """executemany on the sqlite3 cursor: no ORM, no per-row SQL."""

    def insert(self, model: type[models.Model], fields: Sequence[str], rows: list[Row]) -> None:
        table, columns = _columns(model, fields)
        qn = self.connection.ops.quote_name
        sql = (f"INSERT INTO {qn(table)} ({', '.join(qn(c) for c in columns)}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        cursor = self.connection.connection.cursor()
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    @contextmanager
    def session(self) -> Iterator[None]:
        # A bulk load that can be rerun needs no fsync per commit; the usual setting comes back
        # afterwards. The pragma is per connection and cannot change inside a transaction.
        if self.connection.in_atomic_block:
            yield
            return
        raw = self.connection.connection
        (previous,) = raw.execute("PRAGMA synchronous").fetchone()
        raw.execute("PRAGMA synchronous = OFF")
        try:
            yield
        finally:
            raw.execute(f"PRAGMA synchronous = {int(previous)}")


class _PostgreSQLWriter(_Writer):
    """COPY … FROM STDIN with psycopg 3."""

    def timestamp(self, seconds: float) -> str:
        return super().timestamp(seconds) + "+00:00"

    def insert(self, model: type[models.Model], fields: Sequence[str], rows: list[Row]) -> None:
        table, columns = _columns(model, fields)
        qn = self.connection.ops.quote_name
        sql = f"COPY {qn(table)} ({', '.join(qn(c) for c in columns)}) FROM STDIN"
        with self.connection.connection.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    def reset_sequences(self, models_written: Sequence[type[models.Model]]) -> None:
        # Identity sequences do not see explicit ids (SQLite's AUTOINCREMENT counter
        # does): move them on.
        with self.connection.cursor() as cursor:
            for sql in self.connection.ops.sequence_reset_sql(no_style(), list(models_written)):
                cursor.execute(sql)


def _writer_for(connection: BaseDatabaseWrapper) -> _Writer:
    if connection.vendor == "sqlite":
        return _SQLiteWriter(connection)
    if connection.vendor == "postgresql":
        return _PostgreSQLWriter(connection)
    raise SeedError(f"seed_demo supports SQLite and PostgreSQL, not {connection.vendor}.")


# --- generating rows
# ----------------------------------------------------------------------------------

USER_FIELDS = ("id", "password", "last_login", "is_superuser", "username", "first_name", "last_name", "is_staff",
               "is_active", "email", "created_at", "updated_at")
SONG_FIELDS = ("id", "user", "title", "genre", "style_prompt", "lyrics", "status", "suno_song_id",
               "audio_file_path", "video_file_path", "generation_time", "play_count", "created_at", "completed_at")
QUEUE_FIELDS = ("id", "song", "priority", "retry_count", "max_retries", "status", "error_message", "queued_at",
                "started_at", "completed_at")

_MAX_RETRIES = 3  # GenerationQueue.max_retries' default


@dataclass
class _Plan:
    """The fixed facts of one seed run that every batch of rows is built from."""

    rng: random.Random
    pools: Pools
    writer: _Writer
    token: str
    now: float  # seconds since the epoch
    start: float  # now - HISTORY_DAYS
    n_songs: int
    first_song_id: int
    next_queue_id: int
    new_user_ids: range  # users of this run, in sign-up order: a song's owner signed up before it
    existing_user_ids: list[int]  # owners to draw from when this run adds no users

    @property
    def span(self) -> float:
        return self.now - self.start


def _user_rows(plan: _Plan, first_index: int, count: int, password_hash: str) -> list[Row]:
    """Users first_index … first_index+count-1 of this run, sign-ups spread over the history."""
    rnd = plan.rng.random
    ts = plan.writer.timestamp
    firsts, lasts = plan.pools.first_names, plan.pools.last_names
    ids = plan.new_user_ids
    step = plan.span / max(len(ids), 1)
    rows: list[Row] = []
    for index in range(first_index, first_index + count):
        first, last = firsts[int(rnd() * len(firsts))], lasts[int(rnd() * len(lasts))]
        joined = ts(plan.start + index * step)
        rows.append((
            ids[index], password_hash, None, False, f"{first}_{last}_{plan.token}{index}", first.title(),
            last.title(), False, rnd() >= 0.03, f"{first}.{last}.{plan.token}{index}@example.com", joined, joined,
        ))
    return rows


def _song_rows(plan: _Plan, first_index: int, count: int) -> tuple[list[Row], list[Row]]:
    """Songs first_index … first_index+count-1 of this run, with unfinished ones' queue entries."""
    rnd = plan.rng.random
    ts = plan.writer.timestamp
    pools = plan.pools
    genres, statuses, titles, stanzas, prompts = (pools.genres, pools.statuses, pools.titles, pools.stanzas,
                                                  pools.prompts)
    n_genres, n_statuses, n_titles, n_stanzas, n_prompts = (len(genres), len(statuses), len(titles), len(stanzas),
                                                            len(prompts))
    now, start, span = plan.now, plan.start, plan.span
    step = span / max(plan.n_songs, 1)
    new_users, n_new = plan.new_user_ids, len(plan.new_user_ids)
    existing, n_existing = plan.existing_user_ids, len(plan.existing_user_ids)
    completed, pending = Song.Status.COMPLETED.value, Song.Status.PENDING.value
    queued, job_failed = GenerationQueue.Status.QUEUED.value, GenerationQueue.Status.FAILED.value
    songs: list[Row] = []
    jobs: list[Row] = []
    queue_id = plan.next_queue_id
    # the shared files (demo_audio.py)
    audio_paths = {genre: demo_audio_path(genre) for genre in set(genres)}
    for index in range(first_index, first_index + count):
        song_id = plan.first_song_id + index
        # Ids and creation times rise together, with jitter, as they do in a live table.
        created = start + (index + rnd()) * step
        if n_new:
            # Only users who had signed up by then: user i joined at start + i * span / n_new.
            signed_up = min(n_new, int((created - start) / span * n_new) + 1)
            user_id = new_users[int(rnd() * signed_up)]
        else:
            user_id = existing[int(rnd() * n_existing)]
        genre = genres[int(rnd() * n_genres)]
        status = statuses[int(rnd() * n_statuses)]
        verse1, verse2 = stanzas[int(rnd() * n_stanzas)], stanzas[int(rnd() * n_stanzas)]
        chorus, bridge = stanzas[int(rnd() * n_stanzas)], stanzas[int(rnd() * n_stanzas)]
        lyrics = (f"[Verse 1]\n{verse1}\n\n[Chorus]\n{chorus}\n\n[Verse 2]\n{verse2}\n\n[Chorus]\n{chorus}\n\n"
                  f"[Bridge]\n{bridge}\n\n[Chorus]\n{chorus}")
        created_at = ts(created)
        if status == completed:
            generation_time = round(20 + rnd() * 220, 3)
            finished = min(created + rnd() * 120 + generation_time, now)
            r = rnd()
            play_count = int(r * r * r * r * 5000)  # most songs played a little, a few a lot
            songs.append((
                song_id, user_id, titles[int(rnd() * n_titles)], genre, prompts[int(rnd() * n_prompts)].format(
                    genre=genre), lyrics, status, f"demo-{song_id}", audio_paths[genre],
                f"videos/{song_id}.mp4" if rnd() < 0.3 else "", generation_time, play_count, created_at,
                ts(finished),
            ))
            continue
        songs.append((
            song_id, user_id, titles[int(rnd() * n_titles)], genre, prompts[int(rnd() * n_prompts)].format(
                genre=genre), lyrics, status, None, "", "", None, 0, created_at, None,
        ))
        if status == pending:
            retries = 0 if rnd() < 0.85 else 1 + int(rnd() * (_MAX_RETRIES - 1))
            error = ERRORS[int(rnd() * len(ERRORS))] if retries else ""
            priority = 0 if rnd() < 0.9 else 1 + int(rnd() * 10)
            jobs.append((queue_id, song_id, priority, retries, _MAX_RETRIES, queued, error, created_at, None, None))
        else:  # failed: every attempt used up (no song is seeded generating: demo_content.py says why)
            started = min(created + rnd() * 60, now)
            jobs.append((queue_id, song_id, 0, _MAX_RETRIES, _MAX_RETRIES, job_failed,
                         ERRORS[int(rnd() * len(ERRORS))], created_at, ts(started),
                         ts(min(started + rnd() * 300, now))))
        queue_id += 1
    plan.next_queue_id = queue_id
    return songs, jobs


def _next_id(model: type[models.Model], using: str) -> int:
    return (model._default_manager.using(using).aggregate(top=Max("pk"))["top"] or 0) + 1


def _fresh_token(using: str) -> str:
    """A run token that no existing username contains, so seeded usernames never collide."""
    alphabet = string.ascii_lowercase + string.digits
    for _ in range(20):
        token = "".join(secrets.choice(alphabet) for _ in range(6))
        if not User._default_manager.using(using).filter(username__contains=token).exists():
            return token
    raise SeedError("Could not find an unused run token for usernames; try again.")


def seed_demo_data(
    *,
    users: int,
    songs: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
    progress: Callable[[Progress], None] | None = None,
) -> SeedResult:
    """Append `users` users and `songs` songs (with queue entries for unfinished ones)."""
    if users < 0 or songs < 0:
        raise SeedError("The numbers of users and songs cannot be negative.")
    if batch_size < 1:
        raise SeedError("The batch size must be at least 1.")
    began = time.perf_counter()
    connection = connections[using]
    writer = _writer_for(connection)
    rng = random.Random(seed)
    pools = build_pools(rng)
    token = _fresh_token(using)
    first_user_id = _next_id(User, using)
    existing_user_ids: list[int] = []
    if songs and not users:
        existing_user_ids = list(User._default_manager.using(using).values_list("pk", flat=True))
        if not existing_user_ids:
            raise SeedError("Songs need owners: there are no users yet, so seed some users too (--users N).")
    now = time.time()
    plan = _Plan(
        rng=rng, pools=pools, writer=writer, token=token, now=now, start=now - HISTORY_DAYS * 86400,
        n_songs=songs, first_song_id=_next_id(Song, using), next_queue_id=_next_id(GenerationQueue, using),
        new_user_ids=range(first_user_id, first_user_id + users), existing_user_ids=existing_user_ids,
    )

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(Progress(phase=phase, done=done, total=total, elapsed=time.perf_counter() - began))

    connection.ensure_connection()
    with writer.session():
        try:
            queue_entries = _write(plan, users=users, songs=songs, batch_size=batch_size, using=using, report=report)
        finally:
            # Batches already committed stay (the seed appends); the ORM's next insert must not
            # reuse their ids.
            writer.reset_sequences((User, Song, GenerationQueue))
        if users or songs:
            writer.analyze()
    if songs:
        write_demo_audio()  # what the completed songs play
    return SeedResult(users=users, songs=songs, queue_entries=queue_entries, token=token,
                      seconds=time.perf_counter() - began)


def _write(
    plan: _Plan, *, users: int, songs: int, batch_size: int, using: str, report: Callable[[str, int, int], None]
) -> int:
    """Write users, then songs with queue entries, one transaction per batch; count entries."""
    writer = plan.writer
    queue_entries = 0
    if users:
        # One hash for every demo account: hashing is deliberately slow, so never per user.
        password_hash = make_password(DEMO_PASSWORD)
        for offset in range(0, users, batch_size):
            count = min(batch_size, users - offset)
            with transaction.atomic(using=using):
                writer.insert(User, USER_FIELDS, _user_rows(plan, offset, count, password_hash))
            report("users", offset + count, users)
    for offset in range(0, songs, batch_size):
        song_rows, job_rows = _song_rows(plan, offset, min(batch_size, songs - offset))
        with transaction.atomic(using=using):
            writer.insert(Song, SONG_FIELDS, song_rows)
            writer.insert(GenerationQueue, QUEUE_FIELDS, job_rows)
        queue_entries += len(job_rows)
        report("songs", offset + len(song_rows), songs)
    return queue_entries
