"""The admin's song search through the text index gives exactly what a plain scan gives."""

from __future__ import annotations

import pytest
from django.db.models import Q

from songs.models import Song
from tests.factories import make_song, make_user

TERMS = ["moon", "Moonlight", "zebra", "xyzzy-not-there", "ab", "sun river", "suno-77", "alice", "bob@example.com",
         "ght", '"dark sky"', "Ünï"]
# (Non-ASCII in another case differs on purpose: SQLite's LIKE folds ASCII only, the FTS5 index and
# PostgreSQL's UPPER fold Unicode, so "ünï" finds "Ünïcode" through the index but not by a SQLite scan.)


def _scan(text: str) -> set[int]:
    """The reference: icontains over title and suno id, start of username/email, every word — a full scan."""
    from django.utils.text import smart_split, unescape_string_literal

    qs = Song.objects.all()
    for word in smart_split(text):
        word = unescape_string_literal(word) if word[0] in "\"'" else word
        qs = qs.filter(Q(title__icontains=word) | Q(suno_song_id__icontains=word)
                       | Q(user__username__istartswith=word) | Q(user__email__istartswith=word))
    return set(qs.values_list("pk", flat=True))


@pytest.fixture
def catalogue():
    alice = make_user(username="alice", email="alice@example.com")
    bob = make_user(username="bob", email="bob@example.com")
    titles = ["Moonlight Sonata", "Blue moon", "MOONWALK", "Sun and river", "river sun", "Zebra crossing",
              "Dark sky tonight", "dark and sky", "ab", "Cab ride", "Ünïcode song", "plain"]
    songs = [make_song(user=alice if i % 2 else bob, title=t) for i, t in enumerate(titles)]
    songs[3].suno_song_id = "suno-77-abc"
    songs[3].save(update_fields=["suno_song_id"])
    # Changes after the rows were written: the triggers must keep the index in step.
    songs[5].title = "Zebra crossing at night"
    songs[5].save(update_fields=["title"])
    songs[-1].delete()
    return songs


@pytest.mark.usefixtures("catalogue")
@pytest.mark.parametrize("term", TERMS)
@pytest.mark.django_db
def test_search_equals_plain_scan(term):
    found = set(Song.objects.search(term).values_list("pk", flat=True))
    assert found == _scan(term)


@pytest.mark.usefixtures("catalogue")
@pytest.mark.django_db
def test_search_finds_what_it_should():
    assert {s.title for s in Song.objects.search("moon")} == {"Moonlight Sonata", "Blue moon", "MOONWALK"}
    assert {s.title for s in Song.objects.search("zebra night")} == {"Zebra crossing at night"}
    assert Song.objects.search("alice").count() == 5  # six of hers, one deleted
    assert [s.title for s in Song.objects.search("suno-77")] == ["Sun and river"]


@pytest.mark.usefixtures("catalogue")
@pytest.mark.django_db
def test_admin_search_uses_it(admin_client):
    response = admin_client.get("/admin/songs/song/", {"q": "moon"})
    assert response.status_code == 200
    assert set(response.context["cl"].result_list.values_list("title", flat=True)) == {
        "Moonlight Sonata", "Blue moon", "MOONWALK"}
