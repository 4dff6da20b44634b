"""The song admin finds a user's songs by the start of a username or email, any case, through indexes."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.urls import reverse

from accounts.models import User
from songs.models import Song
from tests.factories import make_song, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def people() -> dict[str, list[int]]:
    """Songs of Theodora, theo_k, Theon (by email only) and others; ids by owner."""
    owners = {
        "Theodora": make_user(username="Theodora", email="dora@example.com"),
        "theo_k": make_user(username="theo_k", email="k@example.com"),
        "Matheo": make_user(username="Matheo", email="theodore.m@example.com"),
        "alice": make_user(username="alice", email="alice@example.com"),
        "thexo": make_user(username="thexo", email="x@example.com"),
    }
    return {name: [make_song(user=user, title=f"Tune {i}").pk for i in range(2)] for name, user in owners.items()}


def _found(term: str) -> set[int]:
    return set(Song.objects.search(term).values_list("pk", flat=True))


CASES = [
    ("theo", ["Theodora", "theo_k", "Matheo"]),  # Matheo through his email, theodore.m@…
    ("THEO", ["Theodora", "theo_k", "Matheo"]),
    ("Theodora", ["Theodora"]),
    ("theo_", ["theo_k"]),  # "_" is a character here, not LIKE's wildcard
    ("th%o", []),
    ("heo", []),  # the start of a name, not any part of it
    ("ALICE@EXAMPLE", ["alice"]),
]


def test_search_by_the_start_of_a_username_or_email(people):
    found = {term: _found(term) for term, _ in CASES}
    assert found == {term: {pk for name in owners for pk in people[name]} for term, owners in CASES}


def test_admin_search_box_finds_theodora_by_theo(client, people):
    client.force_login(make_user(username="boss", is_staff=True, is_superuser=True))
    response = client.get(reverse("admin:songs_song_changelist"), {"q": "theo"})
    shown = {song.pk for song in response.context["cl"].result_list}
    assert shown == set(people["Theodora"] + people["theo_k"] + people["Matheo"])
    assert 'title="Theodora"' in response.content.decode()  # the whole name on hover


def _plan(sql: str, params: tuple) -> str:
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return "\n".join(str(row[-1]) for row in cur.fetchall())
        # A few test rows make any plan acceptable to PostgreSQL; forbid the scan so the plan shows
        # whether the indexes can serve the query at all.
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cur.fetchall())


def test_user_prefix_search_reads_the_lowered_indexes(people):
    """Both halves of the OR are index range searches on both engines, never a scan of the users."""
    sql, params = User.objects.starting_with("theo").values("pk").query.sql_with_params()
    with transaction.atomic():
        plan = _plan(sql, params)
    assert "accounts_user_username_lower" in plan, plan
    assert "accounts_user_email_lower_uniq" in plan, plan
    if connection.vendor == "sqlite":
        assert "SCAN accounts_user" not in plan and "MULTI-INDEX OR" in plan, plan
    else:
        assert "Seq Scan" not in plan and "BitmapOr" in plan, plan


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite always compares text by code point")
def test_prefix_search_finds_every_user_under_a_language_collation():
    """Under en-US (a common database default) 'lizzy' sorts after 'li{', so a plain range for 'liz' misses her."""
    lizzy = make_user(username="lizzy", email="lz@example.com")
    liz_ = make_user(username="liz_x", email="lx@example.com")
    make_user(username="lj", email="lj@example.com")
    with connection.cursor() as cursor:  # the columns as a database created with an en_US locale has them
        cursor.execute('ALTER TABLE accounts_user ALTER COLUMN username TYPE varchar(150) COLLATE "en-US-x-icu", '
                       'ALTER COLUMN email TYPE varchar(254) COLLATE "en-US-x-icu"')
    assert set(User.objects.starting_with("liz")) == {lizzy, liz_}
    assert set(User.objects.starting_with("liz_")) == {liz_}
    assert set(User.objects.starting_with("lz@")) == {lizzy}


def test_a_non_ascii_username_is_found_whole_and_odd_input_is_no_error(client):
    """SQLite's lower() folds only A-Z: the whole name must still be found, as the exact search did; and a
    prefix whose next character would be a lone surrogate is a search, not a server error."""
    emile = make_user(username="Émile", email="emile@example.com")
    song = make_song(user=emile, title="Chanson")
    assert set(User.objects.starting_with("Émile")) == {emile}
    assert set(Song.objects.search("Émile")) == {song}
    assert list(User.objects.starting_with("\ud7ff")) == []
    client.force_login(make_user(username="boss", is_staff=True, is_superuser=True))
    assert client.get(reverse("admin:songs_song_changelist"), {"q": "\ud7ff"}).status_code == 200
