"""Every admin form refuses out-of-range input as a form error: a 200 naming the field, never a 500, nothing written."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.urls import reverse

from accounts.models import User
from queueing.models import GenerationQueue
from songs.models import Song
from tests.factories import make_song, make_user

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999"  # past any database integer (2**64 is 1.8e19)
# The integer column's range on this test's database (SQLite: 64 bits; PostgreSQL: 32).
LOW, HIGH = connection.ops.integer_field_range("IntegerField")


@pytest.fixture
def admin_client(client):
    client.force_login(make_user(username="boss", is_staff=True, is_superuser=True))
    return client


def _snapshot() -> tuple:
    """Everything an admin form could write, to compare before and after a refused POST."""
    return (
        list(Song.objects.order_by("pk").values()),
        list(GenerationQueue.objects.order_by("pk").values()),
        list(User.objects.order_by("pk").values()),
        LogEntry.objects.count(),
    )


def _refused(client, url: str, data: dict, field: str) -> None:
    before = _snapshot()
    response = client.post(url, data)
    body = response.content.decode()
    assert response.status_code == 200, body[:3000]
    assert 'class="errorlist' in body and "Please correct the error" in body, body[:3000]
    assert _snapshot() == before


ADD_SONG_CASES = [
    ("priority", HUGE), ("priority", "-" + HUGE), ("priority", str(HIGH + 1)), ("priority", str(LOW - 1)),
    ("priority", "1e400"), ("priority", "seven"), ("priority", ""),
    ("user", HUGE), ("user", "-" + HUGE), ("user", "0"), ("user", "nobody"),
    ("title", "x" * 201), ("title", ""), ("genre", "polka"), ("genre", "x" * 51),
]


@pytest.mark.parametrize(("field", "value"), ADD_SONG_CASES)
def test_add_song_refuses_out_of_range_values(admin_client, field, value):
    owner = make_user()
    valid = {"user": owner.pk, "title": "Bounded", "genre": "jazz", "priority": "5", "style_prompt": "", "lyrics": ""}
    _refused(admin_client, reverse("admin:songs_song_add"), {**valid, field: value}, field)


def test_add_song_says_the_bound_and_accepts_the_whole_range(admin_client):
    owner = make_user()
    url = reverse("admin:songs_song_add")
    form = admin_client.get(url).content.decode()
    assert f'name="priority" value="0" min="{LOW}" max="{HIGH}"' in form.replace(' required', '')
    refused = admin_client.post(url, {"user": owner.pk, "title": "t", "genre": "jazz", "priority": HUGE})
    assert f"Ensure this value is less than or equal to {HIGH}." in refused.content.decode()
    for priority in (HIGH, LOW):
        response = admin_client.post(url, {"user": owner.pk, "title": f"p{priority}", "genre": "jazz",
                                           "priority": str(priority)})
        assert response.status_code == 302, response.content.decode()[:2000]
        assert Song.objects.get(title=f"p{priority}").queue_entries.get().priority == priority


CHANGE_SONG_CASES = [
    ("play_count", HUGE), ("play_count", "-" + HUGE), ("play_count", str(HIGH + 1)), ("play_count", "-1"),
    ("play_count", "many"),
    ("user", HUGE), ("user", "-" + HUGE), ("user", "nobody"),
    ("title", "x" * 201), ("title", ""), ("genre", "polka"),
    ("suno_song_id", "x" * 101), ("suno_song_id", "taken"),
    ("audio_file_path", "x" * 501), ("audio_file_path", "../../etc/passwd"), ("audio_file_path", "/abs"),
    ("video_file_path", "x" * 501), ("video_file_path", "a/../../b"),
]


@pytest.mark.parametrize(("field", "value"), CHANGE_SONG_CASES)
def test_change_song_refuses_out_of_range_values(admin_client, field, value):
    song = make_song()
    Song.objects.filter(pk=make_song().pk).update(suno_song_id="taken")
    jobs = list(song.queue_entries.order_by("-id"))
    valid = {
        "user": song.user_id, "title": song.title, "genre": song.genre, "style_prompt": "", "lyrics": "",
        "suno_song_id": "", "audio_file_path": "", "video_file_path": "", "play_count": "0",
        # The read-only jobs inline's management form.
        "queue_entries-TOTAL_FORMS": str(len(jobs)), "queue_entries-INITIAL_FORMS": str(len(jobs)),
        "queue_entries-MIN_NUM_FORMS": "0", "queue_entries-MAX_NUM_FORMS": "1000",
        **{f"queue_entries-{i}-id": str(job.pk) for i, job in enumerate(jobs)},
        **{f"queue_entries-{i}-song": str(song.pk) for i, job in enumerate(jobs)},
    }
    url = reverse("admin:songs_song_change", args=[song.pk])
    assert admin_client.post(url, {**valid, "title": "still valid"}).status_code == 302
    Song.objects.filter(pk=song.pk).update(title=song.title)
    _refused(admin_client, url, {**valid, field: value}, field)


USER_ADD_CASES = [
    ("username", "x" * 151), ("username", "bad name!"), ("username", ""),
    ("email", "x" * 250 + "@e.com"), ("email", "not-an-email"),
    ("password1", ""),
]


@pytest.mark.parametrize(("field", "value"), USER_ADD_CASES)
def test_add_user_refuses_out_of_range_values(admin_client, field, value):
    valid = {"username": "newcomer", "email": "new@example.com", "password1": "a-Long-pass-42!",
             "password2": "a-Long-pass-42!", "usable_password": "true"}
    data = {**valid, field: value}
    if field == "password1":
        data["password2"] = value
    _refused(admin_client, reverse("admin:accounts_user_add"), data, field)


USER_CHANGE_CASES = [
    ("username", "x" * 151), ("first_name", "x" * 151), ("last_name", "x" * 151),
    ("email", "x" * 250 + "@e.com"), ("groups", HUGE), ("groups", "-" + HUGE), ("groups", "nope"),
    ("user_permissions", HUGE), ("user_permissions", "-1"),
]


@pytest.mark.parametrize(("field", "value"), USER_CHANGE_CASES)
def test_change_user_refuses_out_of_range_values(admin_client, field, value):
    user = make_user()
    Group.objects.create(name="staffers")
    valid = {"username": user.username, "first_name": "", "last_name": "", "email": user.email,
             "is_active": "on"}
    _refused(admin_client, reverse("admin:accounts_user_change", args=[user.pk]), {**valid, field: value}, field)


@pytest.mark.parametrize("object_id", [HUGE, "-" + HUGE, str(HIGH + 1)])
@pytest.mark.parametrize("view", ["admin:songs_song_change", "admin:queueing_generationqueue_change",
                                  "admin:accounts_user_change"])
def test_a_page_for_an_id_past_the_integer_range_is_not_a_500(admin_client, view, object_id):
    response = admin_client.get(reverse(view, args=[object_id]))
    assert response.status_code == 302  # Django's "does not exist" message, back to the list


@pytest.mark.parametrize("name", ["retry", "cancel"])
def test_a_queue_transition_on_an_id_past_the_integer_range_is_a_404(admin_client, name):
    before = _snapshot()
    response = admin_client.post(reverse(f"admin:queueing_generationqueue_{name}", args=[HUGE]))
    assert response.status_code == 404
    assert _snapshot() == before


def test_the_queue_form_is_read_only(admin_client):
    song = make_song()
    job = song.queue_entries.get()
    before = _snapshot()
    response = admin_client.post(reverse("admin:queueing_generationqueue_change", args=[job.pk]),
                                 {"priority": HUGE, "retry_count": "-1", "max_retries": HUGE, "status": "nope"})
    assert response.status_code == 403
    assert _snapshot() == before
