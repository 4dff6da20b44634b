"""Songs: what a user asked for, and where its generation stands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, models
from django.db.models import F, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.text import smart_split, unescape_string_literal

from songsgen.db.fields import column_of, concrete_field

if TYPE_CHECKING:
    from accounts.models import User


def validate_media_path(value: str) -> None:
    """Accept only a path relative to the media root that cannot climb out of it."""
    if not value:
        return
    if "\\" in value or "\x00" in value:
        raise ValidationError("Use forward slashes only in a media path: %(value)r.", params={"value": value})
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValidationError("%(value)r is absolute; give a path relative to the media root.", params={"value": value})
    if ".." in path.parts:
        raise ValidationError("%(value)r contains '..'; it would leave the media root.", params={"value": value})


def validate_encodable_text(value: str) -> None:
    """Refuse text neither database can store: a lone surrogate (JSON's "\\ud800") has no UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            "Contains %(char)s at position %(position)s, half of a character pair that is not valid text on its "
            "own; remove it or send the whole character.",
            code="invalid_text", params={"char": f"U+{ord(value[exc.start]):04X}", "position": exc.start + 1},
        ) from None


# The same rule in the database, so nothing written around the model can store an escaping path.
def _relative_path_q(field: str) -> Q:
    return (
        ~Q(**{f"{field}__startswith": "/"})
        & ~Q(**{field: ".."})
        & ~Q(**{f"{field}__startswith": "../"})
        & ~Q(**{f"{field}__contains": "/../"})
        & ~Q(**{f"{field}__endswith": "/.."})
    )


# The SQLite FTS5 table migration 0004 keeps in step with songs_song by triggers.
SEARCH_TABLE = "songs_song_search"


class SongQuerySet(models.QuerySet["Song"]):
    """The hot queries, each served by a named index in Song.Meta."""

    def for_user(self, user: User) -> SongQuerySet:
        """Songs of one user; with `.with_status()`, `.newest()`: songs_user_status_created."""
        return self.filter(user=user)

    def with_status(self, status: str) -> SongQuerySet:
        """Songs in one status."""
        return self.filter(status=status)

    def pending(self) -> SongQuerySet:
        """Songs waiting for generation, oldest first (partial index songs_pending)."""
        return self.filter(status=Song.Status.PENDING).order_by("created_at", "id")

    def generating(self) -> SongQuerySet:
        return self.filter(status=Song.Status.GENERATING)

    def completed(self) -> SongQuerySet:
        return self.filter(status=Song.Status.COMPLETED)

    def failed(self) -> SongQuerySet:
        return self.filter(status=Song.Status.FAILED)

    def search(self, text: str) -> SongQuerySet:
        """Songs matching every word: in title or suno id (substring), or by the start of their user's
        username or email, any case.

        Served by the text index of migration 0004 (SQLite: the FTS5 trigram table
        songs_song_search; PostgreSQL: pg_trgm GIN indexes under icontains) and the user's
        lower(username) and lower(email) indexes, so a rare word does not read every song. Words
        under three letters fall back to a scan.
        """
        from accounts.models import User

        vendor = connections[self.db].vendor
        result = self
        for word in (unescape_string_literal(w) if w[0] in "\"'" else w for w in smart_split(text)):
            if not word:
                continue
            users = User.objects.starting_with(word).values("pk")
            if vendor == "sqlite" and len(word) >= 3:
                phrase = '"' + word.replace('"', '""') + '"'
                text_match = Q(pk__in=RawSQL(f"SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH %s",
                                             [phrase]))
            else:
                text_match = Q(title__icontains=word) | Q(suno_song_id__icontains=word)
            result = result.filter(text_match | Q(user__in=users))
        return result

    def newest(self) -> SongQuerySet:
        """Newest first; ties broken by id so pages are stable (songs_created)."""
        return self.order_by("-created_at", "-id")

    # --- transitions in bulk, for a batch of songs ----------------------------------------------
    def mark_generating(self) -> int:
        """Workers started generating these songs (a claimed batch); returns how many."""
        return self.update(status=Song.Status.GENERATING)

    def prepare_completions(self, completions: Iterable[tuple[Song, str, float, str | None]]) -> Completions:
        """Validate a batch of completions and prepare its statement; `.run()` writes it.

        Validates like mark_completed (an invalid path raises ValidationError, nothing written) and
        converts every value before any transaction, so a worker holds SQLite's write lock only for
        the statements themselves.
        """
        completions = list(completions)
        for _song, path, _seconds, _external_id in completions:
            validate_media_path(path)
        now = timezone.now()
        connection = connections[self.db]
        fields = [concrete_field(Song, name) for name in Completions.FIELDS]
        rows: dict[int, CompletionRow] = {}
        for song, path, seconds, external_id in completions:
            values: CompletedValues = (Song.Status.COMPLETED, path, max(0.0, seconds), max(now, song.created_at))
            prepared = [field.get_db_prep_save(value, connection) for field, value in zip(fields, values, strict=True)]
            rows[song.pk] = (song, values, external_id or None, prepared)
        return Completions(self.db, rows)


# Completions.FIELDS as set on the instance: status, audio_file_path, generation_time, completed_at.
CompletedValues = tuple["Song.Status", str, float, datetime]
# song, its values, its external id, and the values converted for the driver
# (Field.get_db_prep_save, which may return a driver's adapter object, hence Any).
CompletionRow = tuple["Song", CompletedValues, str | None, list[Any]]


@dataclass
class Completions:
    """A batch of Song.mark_completed, validated and converted (SongQuerySet.prepare_completions).

    One prepared UPDATE run once per song (executemany): the songs' values differ, and neither a
    save per song nor bulk_update's CASE per column keeps up with a worker (measured: 150 and 300 µs
    a song, against 9). Songs without an external id get a statement that leaves suno_song_id alone:
    writing that column fires the search index's update trigger (migration 0004).
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("status", "audio_file_path", "generation_time", "completed_at")

    using: str
    rows: dict[int, CompletionRow]

    def run(self, song_ids: Iterable[int] | None = None) -> None:
        """Write the completions (only `song_ids`' when given); set the fields on the instances."""
        chosen = [self.rows[pk] for pk in song_ids] if song_ids is not None else list(self.rows.values())
        if not chosen:
            return
        connection = connections[self.using]
        qn = connection.ops.quote_name
        meta = Song._meta
        sets = ", ".join(f"{qn(column_of(Song, name))} = %s" for name in self.FIELDS)
        table, where = qn(meta.db_table), f" WHERE {qn(meta.pk.column)} = %s"
        plain = [[*prepared, song.pk] for song, _, external_id, prepared in chosen if not external_id]
        with_external = [[*prepared, external_id, song.pk] for song, _, external_id, prepared in chosen if external_id]
        with connection.cursor() as cursor:
            if plain:
                cursor.executemany(f"UPDATE {table} SET {sets}{where}", plain)
            if with_external:
                external = qn(column_of(Song, "suno_song_id"))
                cursor.executemany(f"UPDATE {table} SET {sets}, {external} = %s{where}", with_external)
        for song, values, external_id, _ in chosen:
            for name, value in zip(self.FIELDS, values, strict=True):
                setattr(song, name, value)
            if external_id:
                song.suno_song_id = external_id


class Song(models.Model):
    """A song a user requested; generated by the queue worker."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # requested, waiting in the generation queue
        GENERATING = "generating", "Generating"  # a worker holds its job
        COMPLETED = "completed", "Completed"  # audio written; completed_at set
        FAILED = "failed", "Failed"  # its job ran out of retries

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="songs",
        # No separate index: songs_user_status_created starts with user and
        # serves every user lookup.
        db_index=False,
    )
    title = models.CharField(max_length=200)
    genre = models.CharField(max_length=50)
    style_prompt = models.TextField(blank=True, default="")
    lyrics = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    suno_song_id = models.CharField(
        max_length=100, null=True, blank=True, help_text="Id at the external generator; unique when present."
    )
    audio_file_path = models.CharField(
        max_length=500, blank=True, default="", validators=[validate_media_path],
        help_text="Relative to the media root.",
    )
    video_file_path = models.CharField(
        max_length=500, blank=True, default="", validators=[validate_media_path],
        help_text="Relative to the media root.",
    )
    generation_time = models.FloatField(null=True, blank=True, help_text="Seconds spent generating.")
    play_count = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Expand step: added with a database default, so the column appears without rewriting the
    # table and code that does not know it yet can still insert rows. Filled from play_count by a
    # batched backfill. A nullable column with a constant Value default is a plain ALTER TABLE
    # ADD COLUMN on both engines; a NOT NULL one would make SQLite copy the whole table. Code
    # treats NULL like {}.
    analytics_data = models.JSONField(
        null=True, blank=True, db_default=models.Value({}, output_field=models.JSONField()),
        help_text="Plays, likes, …",
    )

    objects = SongQuerySet.as_manager()

    class Meta:
        indexes = [
            # SongQuerySet.for_user(u).with_status(s).newest(): a user's songs by
            # status, newest first.
            models.Index(fields=["user", "status", "created_at"], name="songs_user_status_created"),
            # SongQuerySet.newest(): the newest songs; also the admin changelist's ordering.
            models.Index(fields=["created_at", "id"], name="songs_created"),
            # The admin's status filter: rows of one status, newest first, and its capped count.
            models.Index(fields=["status", "created_at", "id"], name="songs_status_created"),
            # The admin's genre filter, newest first, and its capped count: without it a rare or
            # unknown genre reads the whole table (1.6 s at 1M songs).
            models.Index(fields=["genre", "created_at", "id"], name="songs_genre_created"),
            # SongQuerySet.pending(): the few songs still waiting, oldest first.
            models.Index(
                fields=["created_at", "id"], name="songs_pending", condition=Q(status="pending")
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "generating", "completed", "failed"]),
                name="songs_song_status_valid",
            ),
            models.UniqueConstraint(
                fields=["suno_song_id"], condition=Q(suno_song_id__isnull=False), name="songs_song_suno_id_uniq"
            ),
            models.CheckConstraint(condition=Q(play_count__gte=0), name="songs_song_play_count_gte_0"),
            models.CheckConstraint(
                condition=Q(generation_time__isnull=True) | Q(generation_time__gte=0),
                name="songs_song_generation_time_gte_0",
            ),
            models.CheckConstraint(
                condition=Q(completed_at__isnull=True) | Q(completed_at__gte=F("created_at")),
                name="songs_song_completed_after_created",
            ),
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(completed_at__isnull=False),
                name="songs_song_completed_has_completed_at",
            ),
            models.CheckConstraint(
                condition=_relative_path_q("audio_file_path") & _relative_path_q("video_file_path"),
                name="songs_song_media_paths_relative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.get_status_display()})"

    def clean_fields(self, exclude: Iterable[str] | None = None) -> None:
        """Django's field validation, and every text field encodable (the database
        driver would raise UnicodeEncodeError on saving it; the admin form and
        song_request show a ValidationError)."""
        skip = set(exclude or ())
        errors: dict[str, list[ValidationError]] = {}
        for field in self._meta.concrete_fields:
            value = getattr(self, field.attname)
            if field.name in skip or not isinstance(field, models.CharField | models.TextField):
                continue
            try:
                if isinstance(value, str):
                    validate_encodable_text(value)
            except ValidationError as exc:
                errors[field.name] = [exc]
                skip.add(field.name)  # one message per field
        try:
            super().clean_fields(exclude=skip)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    # --- transitions: called by the queue worker through job.song --------------------------------
    def mark_generating(self) -> None:
        """A worker started generating this song."""
        self.status = self.Status.GENERATING
        self.save(update_fields=["status"])

    def mark_completed(
        self, *, audio_file_path: str, generation_time: float, suno_song_id: str | None = None
    ) -> None:
        """The audio is written; record where and how long it took."""
        validate_media_path(audio_file_path)
        self.status = self.Status.COMPLETED
        self.audio_file_path = audio_file_path
        self.generation_time = max(0.0, generation_time)
        self.completed_at = max(timezone.now(), self.created_at)
        fields = ["status", "audio_file_path", "generation_time", "completed_at"]
        if suno_song_id:
            self.suno_song_id = suno_song_id
            fields.append("suno_song_id")
        self.save(update_fields=fields)

    def mark_failed(self) -> None:
        """Generation gave up on this song."""
        self.status = self.Status.FAILED
        self.save(update_fields=["status"])

    def mark_pending(self) -> None:
        """The song is waiting in the queue again (a failed job was retried)."""
        self.status = self.Status.PENDING
        self.save(update_fields=["status"])
