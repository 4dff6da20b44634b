"""The songs and queue admin: fixed query counts, no table-wide counts, working actions."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from queueing.models import GenerationQueue
from songs.models import Song
from tests.factories import make_song, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = make_user(username="boss", is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


@pytest.fixture
def songs():
    users = [make_user() for _ in range(3)]
    made = [make_song(user=users[i % 3], genre=("pop", "rock")[i % 2]) for i in range(30)]
    for song in made[:10]:
        song.mark_generating()
        song.mark_completed(audio_file_path=f"songs/{song.pk}.wav", generation_time=1.0)
        GenerationQueue.objects.filter(song=song).update(status="done")
    return made


def _queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response, [q["sql"] for q in ctx.captured_queries]


def _no_unfiltered_count(queries):
    for sql in queries:
        if "COUNT(" in sql.upper():
            # every count is capped by a LIMIT inside it
            assert "LIMIT" in sql.upper(), sql


@pytest.mark.parametrize(
    "query",
    ["", "?status__exact=pending", "?genre=rock", "?status__exact=completed&genre=pop", "?q=Song", "?p=2"],
)
def test_song_changelist_query_count_is_fixed(admin_client, songs, query, settings):
    url = reverse("admin:songs_song_changelist") + query
    response, queries = _queries(admin_client, url)
    _no_unfiltered_count(queries)
    assert not any("DISTINCT" in sql.upper() for sql in queries), "filters must not scan the table"
    # session, user, capped count, page of songs with their users (list_select_related)
    assert len(queries) == 4, queries
    # and the same number with ten times the rows
    for _ in range(3):
        make_song()
    assert len(_queries(admin_client, url)[1]) == 4


def test_song_changelist_filters(admin_client, songs):
    url = reverse("admin:songs_song_changelist")
    pending = admin_client.get(url, {"status__exact": "pending"}).content.decode()
    completed_title = songs[0].title
    assert songs[-1].title in pending and f">{completed_title}<" not in pending
    rock = admin_client.get(url, {"genre": "rock"}).content.decode()
    assert f">{songs[1].title}<" in rock and f">{songs[0].title}<" not in rock


def test_song_changelist_capped_count_says_more(admin_client, songs):
    url = reverse("admin:songs_song_changelist")
    from songs.admin import SongAdmin

    SongAdmin.list_per_page, old = 2, SongAdmin.list_per_page
    try:
        body = admin_client.get(url).content.decode()
    finally:
        SongAdmin.list_per_page = old
    assert "More than 22 songs" in body  # (1 + 10 pages ahead) * 2 per page


def test_song_change_page_queries_fixed_and_shows_queue(admin_client, songs):
    song = songs[-1]
    url = reverse("admin:songs_song_change", args=[song.pk])
    admin_client.get(url)  # warm Django's content-type cache, as a running server has
    response, queries = _queries(admin_client, url)
    body = response.content.decode()
    assert "Queued" in body and song.title in body
    assert "<select" not in body.split('name="user"')[0][-200:], "user must be a raw id, not a drop-down"
    count = len(queries)
    for _ in range(20):
        make_user()
    assert len(_queries(admin_client, url)[1]) == count
    assert count <= 8, queries


def test_queue_changelist_default_queued_in_claim_order(admin_client, songs):
    hi = make_song(priority=5)
    url = reverse("admin:queueing_generationqueue_changelist")
    response, queries = _queries(admin_client, url)
    _no_unfiltered_count(queries)
    jobs = list(response.context["cl"].result_list)
    assert jobs[0].song_id == hi.pk
    assert {j.status for j in jobs} == {"queued"}
    # session, user, the stats box (one query of capped, indexed counts), capped count, page of jobs
    assert len(queries) == 5, queries
    stats = response.context["queue_stats"]
    assert stats.counts["queued"] == 21 and stats.counts["done"] == 10
    assert 'id="queue-stats"' in response.content.decode()
    everything = admin_client.get(url, {"status": "all"}).context["cl"].result_list
    assert {j.status for j in everything} == {"queued", "done"}


def test_queue_actions_retry_and_cancel(admin_client, songs):
    url = reverse("admin:queueing_generationqueue_changelist")
    queued = songs[-1].queue_entries.get()
    response = admin_client.post(
        url, {"action": "cancel_jobs", "_selected_action": [queued.pk]}, follow=True
    )
    assert "1 job(s) cancelled." in response.content.decode()
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    assert Song.objects.get(pk=queued.song_id).status == "failed"

    done = songs[0].queue_entries.get()
    response = admin_client.post(
        url + "?status=all", {"action": "retry_jobs", "_selected_action": [done.pk]}, follow=True
    )
    assert "only failed jobs can be retried" in response.content.decode()
    done.refresh_from_db()
    assert done.status == "done"


def test_queue_entry_page_is_read_only(admin_client, songs):
    job = songs[-1].queue_entries.get()
    body = admin_client.get(reverse("admin:queueing_generationqueue_change", args=[job.pk])).content.decode()
    assert 'name="status"' not in body


def test_deep_pages_read_ids_first_and_keep_order(admin_client, songs, settings):
    from songsgen.db import pagination

    url = reverse("admin:songs_song_changelist")
    from songs.admin import SongAdmin

    old = SongAdmin.list_per_page, pagination.DEFERRED_JOIN_FROM_OFFSET
    SongAdmin.list_per_page, pagination.DEFERRED_JOIN_FROM_OFFSET = 3, 6
    try:
        expected = list(Song.objects.order_by("-created_at", "-id").values_list("pk", flat=True)[6:9])
        response, queries = _queries(admin_client, url + "?p=3")
        shown = [s.pk for s in response.context["cl"].result_list]
        pending = admin_client.get(url + "?p=3&status__exact=pending").context["cl"].result_list
    finally:
        SongAdmin.list_per_page, pagination.DEFERRED_JOIN_FROM_OFFSET = old
    assert shown == expected
    assert len(queries) == 5, queries  # session, user, capped count, the page's ids, its rows
    want = list(Song.objects.filter(status="pending").order_by("-created_at", "-id").values_list("pk", flat=True))
    assert [s.pk for s in pending] == want[6:9]
