"""Work that spans models: requesting a song means a Song and its queue entry, together."""

from __future__ import annotations

from django.db import transaction

from accounts.models import User
from queueing.models import GenerationQueue
from songs.models import Song


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
    song = Song(user=user, title=title, genre=genre, style_prompt=style_prompt, lyrics=lyrics)
    song.full_clean()
    with transaction.atomic():
        song.save()
        job = GenerationQueue(song=song, priority=priority)
        job.full_clean(validate_constraints=False)  # the active-job constraint is the database's
        job.save()
    return song
