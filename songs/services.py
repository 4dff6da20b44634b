"""Work that spans models: requesting a song means a Song and its queue entry, together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import User
from queueing.models import GenerationQueue
from songs.models import Song


@dataclass(frozen=True)
class SongRequest:
    """One song a user asks for: what song_requests() takes, a batch at a time."""

    user: User
    title: str
    genre: str
    style_prompt: str = ""
    lyrics: str = ""
    priority: int = 0


def song_request(
    *,
    user: User,
    title: str,
    genre: str,
    style_prompt: str = "",
    lyrics: str = "",
    priority: int = 0,
) -> Song:
    """Create a pending Song and its queued GenerationQueue entry in one transaction."""
    [song] = song_requests([SongRequest(user, title, genre, style_prompt, lyrics, priority)])
    return song


def validated(request: SongRequest) -> tuple[Song, GenerationQueue]:
    """The unsaved song and job of a request, or the ValidationError (by field) refusing it."""
    song = Song(user=request.user, title=request.title, genre=request.genre,
                style_prompt=request.style_prompt, lyrics=request.lyrics)
    job = GenerationQueue(priority=request.priority)
    # Field validation only. The constraints concern fields no caller sets here (status, counters,
    # dates, paths; one active job per new song) and Django checks each with a query of its own;
    # `user` would re-read a User we were handed. The database enforces them all.
    errors: dict[str, list[ValidationError]] = {}
    for instance, exclude in ((song, ["user"]), (job, ["song"])):
        try:
            instance.full_clean(exclude=exclude, validate_constraints=False)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
    if errors:
        raise ValidationError(errors)
    return song, job


def song_requests(requests: Iterable[SongRequest]) -> list[Song]:
    """Create a pending Song and a queued job for each request, all in one transaction.

    Every request is validated before anything is written; an invalid one raises its
    ValidationError (with a note naming which request it was) and nothing is created. Then the
    songs go in with one INSERT and their jobs with another (per batch of rows the database takes
    in one statement), instead of two INSERTs and a savepoint per song: the ORM's per-row work was
    most of an enqueue's cost.
    """
    requests = list(requests)
    songs, jobs = [], []
    for index, request in enumerate(requests):
        try:
            song, job = validated(request)
        except ValidationError as exc:
            if len(requests) > 1:
                exc.add_note(f"In song request {index + 1} of {len(requests)} ({request.title!r}); none was created.")
            raise
        songs.append(song)
        jobs.append(job)
    if not songs:
        return []
    with transaction.atomic():
        # primary keys come back (RETURNING on SQLite and PostgreSQL)
        Song.objects.bulk_create(songs)
        for song, job in zip(songs, jobs, strict=True):
            job.song = song
        GenerationQueue.objects.bulk_create(jobs)
    return songs
