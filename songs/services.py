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
    # Field validation only. The constraints concern fields no caller sets here (status, counters,
    # dates, paths) and Django checks each with a query of its own; the `user` check would re-read a
    # User we were handed. The database enforces both, and these queries halved the enqueue rate.
    song.full_clean(exclude=["user"], validate_constraints=False)
    with transaction.atomic():
        song.save()
        job = GenerationQueue(song=song, priority=priority)
        # The active-job constraint is the database's; `song` was saved a line above.
        job.full_clean(exclude=["song"], validate_constraints=False)
        job.save()
    return song
