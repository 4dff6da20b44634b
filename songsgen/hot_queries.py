"""The hot queries `manage.py dbcheck` explains, by name (settings.SONGSGEN_HOT_QUERIES lists them).

Built from the apps' own QuerySet methods, so a change there shows here.
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
    """The worker's next-job query (queue_claim on PostgreSQL, queue_status_order on SQLite)."""
    return GenerationQueue.objects.next_job()[:1]
