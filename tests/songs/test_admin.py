"""The songs admin: fixed query counts, no table-wide counts, honest counts, adding a song requests it."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from queueing.models import GenerationQueue
from songs.admin import GENRES
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


@pytest.fixture
def two_per_page():
    from songs.admin import SongAdmin

    SongAdmin.list_per_page, old = 2, SongAdmin.list_per_page
    yield
    SongAdmin.list_per_page = old


def test_song_changelist_capped_count_says_more_at_top_and_bottom(admin_client, songs, two_per_page):
    body = admin_client.get(reverse("admin:songs_song_changelist")).content.decode()
    # (1 + 10 pages ahead) * 2 per page: the count stopped there, and says so above and below the list.
    top = re.search(r'<span class="small quiet" id="result-count">([^(]*)\(', body)
    assert top and top.group(1).strip() == "More than 22 songs"
    assert re.search(r'<p class="paginator">.*More than 22 songs', body, re.S)
    assert "22 results" not in body and "Select all 22" not in body
    assert "Select all matching: more than 22 songs" in body


def test_song_changelist_exact_count_when_all_counted(admin_client, songs):
    body = admin_client.get(reverse("admin:songs_song_changelist"), {"status__exact": "completed"}).content.decode()
    assert body.count("10 songs") == 2 and "More than" not in body


@pytest.mark.parametrize(
    ("page", "shown"),
    [("99999999999999999999", "last"), ("9223372036854775807", "last"), ("16", "last"), ("0", "first"),
     ("-9223372036854775809", "first"), ("2", 2)],
)
def test_song_changelist_any_page_number_answers_a_page(admin_client, songs, two_per_page, page, shown):
    """A page past the end is the last page (Paginator.get_page's rule), never a 500 from an overflowed LIMIT."""
    url = reverse("admin:songs_song_changelist")
    response = admin_client.get(url, {"p": page})
    assert response.status_code == 200
    newest = list(Song.objects.order_by("-created_at", "-id").values_list("pk", flat=True))
    pages = {"first": newest[:2], "last": newest[-2:], 2: newest[2:4]}
    assert [s.pk for s in response.context["cl"].result_list] == pages[shown]
    assert response.context["cl"].page_num == {"first": 1, "last": 15, 2: 2}[shown]
    # and under a filter, on the capped count's deep-page path too
    filtered = admin_client.get(url, {"p": page, "status__exact": "pending"})
    assert filtered.status_code == 200 and filtered.context["cl"].result_list


def test_song_changelist_is_dense(admin_client, songs):
    body = admin_client.get(reverse("admin:songs_song_changelist")).content.decode()
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', body)
    assert headers == ["song_title", "owner", "genre", "status_badge", "created", "completed", "plays"]
    assert '<span class="status-badge status-completed" title="Completed 2' in body  # completion time on hover
    assert '<span class="status-badge status-pending" title="Pending">Pending</span>' in body
    song = songs[0]
    exact = timezone.localtime(song.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    created = re.escape(song.created_at.isoformat())
    assert re.search(rf'<time datetime="{created}" title="{exact}">\d+ s ago</time>', body)
    assert f'<span class="clip clip-title" title="{song.title}">{song.title}</span>' in body
    assert 'href="/static/songsgen/admin.css"' in body


def test_add_song_requests_it_song_and_job_together(admin_client, songs):
    owner = make_user(username="requester")
    url = reverse("admin:songs_song_add")
    form = admin_client.get(url).content.decode()
    genres = re.findall(r'<option value="([^"]*)"', form.split('name="genre"')[1].split("</select>")[0])
    assert [html.unescape(genre) for genre in genres] == list(GENRES)
    assert 'name="priority"' in form and 'name="status"' not in form

    response = admin_client.post(url, {"user": owner.pk, "title": "Fresh From The Admin", "genre": "jazz",
                                       "priority": "7", "style_prompt": "smoky", "lyrics": "la la"})
    assert response.status_code == 302, response.content.decode()[:2000]
    song = Song.objects.get(title="Fresh From The Admin")
    assert (song.user, song.genre, song.status, song.style_prompt) == (owner, "jazz", "pending", "smoky")
    job = song.queue_entries.get()
    assert (job.status, job.priority, job.retry_count) == ("queued", 7, 0)
    entry = LogEntry.objects.get(object_id=str(song.pk), content_type__model="song")
    assert entry.is_addition()


def test_add_song_refuses_a_genre_the_service_does_not_offer(admin_client, songs):
    before = (Song.objects.count(), GenerationQueue.objects.count())
    response = admin_client.post(reverse("admin:songs_song_add"), {
        "user": songs[0].user_id, "title": "Nope", "genre": "polka", "priority": "0"})
    assert response.status_code == 200
    assert "Select a valid choice. polka is not one of the available choices." in response.content.decode()
    assert (Song.objects.count(), GenerationQueue.objects.count()) == before


def test_song_page_keeps_a_genre_no_longer_offered(admin_client, songs):
    Song.objects.filter(pk=songs[0].pk).update(genre="polka")
    body = admin_client.get(reverse("admin:songs_song_change", args=[songs[0].pk])).content.decode()
    assert '<option value="polka" selected>polka (no longer offered)</option>' in body


def test_deleting_a_song_takes_its_jobs(admin_client, songs):
    song = songs[-1]
    url = reverse("admin:songs_song_delete", args=[song.pk])
    page = admin_client.get(url).content.decode()
    assert "would require deleting the following protected" not in page
    assert "Your account doesn't have permission to delete" not in page
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Song.objects.filter(pk=song.pk).exists()
    assert not GenerationQueue.objects.filter(song_id=song.pk).exists()


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


def test_deep_pages_read_ids_first_and_keep_order(admin_client, songs, settings):
    from songsgen import pagination

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


def test_song_page_rounds_the_generation_time(admin_client, songs):
    """A person reads '12.3 s', not the float's 15 decimals."""
    song = songs[0]
    Song.objects.filter(pk=song.pk).update(generation_time=12.345678901234567)
    body = admin_client.get(reverse("admin:songs_song_change", args=[song.pk])).content.decode()
    cell = re.search(r'<div class="form-row field-generation_seconds">.*?<div class="readonly">(.*?)</div>', body,
                     re.S)
    assert cell is not None and cell.group(1) == "12.3 s", body[:200]
    assert "12.3456" not in body
    listed = admin_client.get(reverse("admin:songs_song_changelist")).content.decode()
    assert "took 12 s" in listed and "12.3456" not in listed
