"""The hot queries `manage.py dbcheck` explains, by name (settings.SONGSGEN_HOT_QUERIES lists them).

Each is the shape of a query the application runs on every request or claim, built with the apps' own
QuerySet methods, so a change there shows here. A plan does not depend on which user it is for, so
user 1 stands for any one. dbcheck fails when one of them reads a big table without its index.
"""

from __future__ import annotations

from queueing.models import GenerationQueue, GenerationQueueQuerySet
from songs.models import Song, SongQuerySet


def songs_by_user_status() -> SongQuerySet:
    """A user's songs of one status, newest first (songs_user_status_created)."""
    return Song.objects.filter(user_id=1).with_status(Song.Status.COMPLETED).newest()[:50]


def newest_songs() -> SongQuerySet:
    """The newest songs (songs_created)."""
    return Song.objects.newest()[:50]


def pending_songs() -> SongQuerySet:
    """Songs waiting for generation, oldest first (songs_pending)."""
    return Song.objects.pending()[:50]


def next_job() -> GenerationQueueQuerySet:
    """The worker's next-job query (queue_claim)."""
    return GenerationQueue.objects.next_job()[:1]
