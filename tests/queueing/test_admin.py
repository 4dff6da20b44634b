"""The queue admin: read-only but for retry and cancel, as actions and as buttons; honest about what it skipped."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from queueing.models import GenerationQueue
from songs.models import Song
from tests.factories import make_song, make_user

pytestmark = pytest.mark.django_db

LIST = reverse("admin:queueing_generationqueue_changelist")
AFTER_ONE_CANCEL = "1 job cancelled. Its song is marked failed; Retry on the job's page puts the job back in the queue."
LONG_ERROR = "Traceback (most recent call last):\n" + "  File 'generator.py', line 1, in generate\n" * 60 + "Boom"


def page(job: GenerationQueue) -> str:
    return reverse("admin:queueing_generationqueue_change", args=[job.pk])


def button(job: GenerationQueue, name: str) -> str:
    return reverse(f"admin:queueing_generationqueue_{name}", args=[job.pk])


@pytest.fixture
def admin_client(client):
    client.force_login(make_user(username="boss", is_staff=True, is_superuser=True))
    return client


def running(job: GenerationQueue, worker: str = "worker-a") -> GenerationQueue:
    """Claimed by a worker, as GenerationQueueQuerySet.claim leaves it."""
    now = timezone.now()
    GenerationQueue.objects.filter(pk=job.pk).update(status="running", worker_id=worker, started_at=now,
                                                     lease_expires_at=now + timedelta(seconds=60))
    job.song.mark_generating()
    job.refresh_from_db()
    return job


def failed(job: GenerationQueue, error: str = "the generator is down") -> GenerationQueue:
    """Out of retries, as the worker's fail_attempt leaves it."""
    GenerationQueue.objects.filter(pk=job.pk).update(status="failed", retry_count=job.max_retries,
                                                     error_message=error, completed_at=timezone.now())
    job.song.mark_failed()
    job.refresh_from_db()
    return job


def done(job: GenerationQueue) -> GenerationQueue:
    GenerationQueue.objects.filter(pk=job.pk).update(status="done", completed_at=timezone.now())
    job.song.mark_generating()
    job.song.mark_completed(audio_file_path=f"songs/{job.song_id}.wav", generation_time=1.0)
    job.refresh_from_db()
    return job


@pytest.fixture
def jobs():
    """Eight songs' jobs: three queued, two running, two failed, one done."""
    made = [make_song(title=f"Queue Song {i}").queue_entries.get() for i in range(8)]
    return {"queued": made[:3], "running": [running(j) for j in made[3:5]],
            "failed": [failed(j, LONG_ERROR) for j in made[5:7]], "done": [done(made[7])]}


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_changelist_default_queued_in_claim_order_with_fixed_queries(admin_client, jobs):
    hi = make_song(priority=5).queue_entries.get()
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(LIST)
    listed = list(response.context["cl"].result_list)
    assert listed[0] == hi and {j.status for j in listed} == {"queued"}
    # session, user, the stats box (one query of capped, indexed counts), capped count, page of jobs
    assert len(ctx.captured_queries) == 5, [q["sql"] for q in ctx.captured_queries]
    assert response.context["queue_stats"].counts == {"queued": 4, "running": 2, "done": 1, "failed": 2,
                                                      "cancelled": 0}


def test_counts_say_jobs_and_show_all_lists_every_status(admin_client, jobs):
    body = admin_client.get(LIST).content.decode()
    top = re.search(r'id="result-count">([^(]*)\(<a href="([^"]+)">Show all</a>\)', body)
    assert top and top.group(1).strip() == "3 jobs", "the count above the list"
    assert re.search(r'<p class="paginator">\s*3 jobs', body), "the count below the list"
    assert "generation queue\n" not in body.split('<p class="paginator">')[1]
    everything = admin_client.get(LIST + top.group(2))
    assert top.group(2) == "?status=all"
    assert {j.status for j in everything.context["cl"].result_list} == {"queued", "running", "failed", "done"}
    assert "8 jobs" in everything.content.decode()
    one = admin_client.get(LIST, {"status": "done"}).content.decode()
    assert re.search(r'<p class="paginator">\s*1 job\s', one)


@pytest.mark.parametrize("number", ["9223372036854775807", "99999999999999999999", "0", "-1"])
def test_any_page_number_answers_a_page(admin_client, jobs, number):
    """It answered 500 (a LIMIT past the database's integers); now the first or last page, as Paginator.get_page."""
    response = admin_client.get(LIST, {"status": "all", "p": number})
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 8 and response.context["cl"].page_num == 1


def test_changelist_is_dense(admin_client, jobs):
    body = admin_client.get(LIST, {"status": "failed"}).content.decode()
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', body)
    assert headers == ["id", "song_title", "status_badge", "priority", "retries", "queued", "last_run", "error"]
    assert '<td class="field-retries">3/3</td>' in body
    assert '<span class="status-badge status-failed" title="Failed">Failed</span>' in body
    # The error's first line in the cell, cut by CSS; the whole text on hover.
    escaped = LONG_ERROR.replace("'", "&#x27;")
    assert f'<span class="clip clip-error" title="{escaped}">Traceback (most recent call last):</span>' in body
    assert re.search(r'<time datetime="[^"]+" title="[^"]+">failed \d+ s ago</time>', body)


def test_queue_cannot_be_deleted_from_the_admin(admin_client, jobs):
    job = jobs["failed"][0]
    body = admin_client.get(LIST, {"status": "all"}).content.decode()
    assert 'value="delete_selected"' not in body
    assert [v for v in re.findall(r'<option value="(\w+)"', body) if v.endswith("_jobs")] == ["retry_jobs",
                                                                                            "cancel_jobs"]
    assert "deletelink" not in admin_client.get(page(job)).content.decode()
    delete = reverse("admin:queueing_generationqueue_delete", args=[job.pk])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    refused = admin_client.post(LIST + "?status=all", {"action": "delete_selected", "_selected_action": [job.pk]})
    assert GenerationQueue.objects.filter(pk=job.pk).exists(), refused


def test_job_page_buttons_retry_and_cancel(admin_client, jobs):
    job = jobs["failed"][0]
    body = admin_client.get(page(job)).content.decode()
    assert f'action="{button(job, "retry")}"' in body and button(job, "cancel") not in body
    assert LONG_ERROR.splitlines()[-1] in body  # the whole error on the job's page

    response = admin_client.post(button(job, "retry"), follow=True)
    assert response.redirect_chain == [(page(job), 302)]
    assert messages_of(response) == ["1 job queued again."]
    job.refresh_from_db()
    assert (job.status, job.retry_count, Song.objects.get(pk=job.song_id).status) == ("queued", 0, "pending")

    body = response.content.decode()
    # Cancel is a link to the page that asks first, not a button that acts at once.
    assert f'href="{button(job, "cancel")}"' in body and button(job, "retry") not in body
    response = admin_client.post(button(job, "cancel"), {"post": "yes"}, follow=True)
    assert messages_of(response) == [AFTER_ONE_CANCEL]
    job.refresh_from_db()
    assert job.status == "cancelled" and Song.objects.get(pk=job.song_id).status == "failed"
    body = response.content.decode()
    assert button(job, "cancel") not in body and f'action="{button(job, "retry")}"' in body
    assert "Retry puts the job back in the queue" in body  # the cancelled job's page says so


def test_cancel_asks_first_and_retry_undoes_it(admin_client, jobs):
    """The job page's Cancel shows what it will do and changes nothing until its POST; Retry brings it back."""
    job = jobs["queued"][0]
    confirm = admin_client.get(button(job, "cancel"))
    body = confirm.content.decode()
    assert confirm.status_code == 200 and "Are you sure you want to cancel this queued job?" in body
    assert "Its song is marked failed." in body and job.song.title in body
    assert f'<form method="post" action="{button(job, "cancel")}">' in body and 'value="Yes, cancel the job"' in body
    assert f'href="{page(job)}" class="button cancel-link">No, take me back' in body
    job.refresh_from_db()
    assert job.status == "queued" and Song.objects.get(pk=job.song_id).status == "pending"

    admin_client.post(button(job, "cancel"), {"post": "yes"}, follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled"
    response = admin_client.post(button(job, "retry"), follow=True)
    assert messages_of(response) == ["1 job queued again."]
    job.refresh_from_db()
    assert job.status == "queued" and Song.objects.get(pk=job.song_id).status == "pending"


def test_cancel_page_of_a_job_that_is_not_queued_offers_nothing(admin_client, jobs):
    body = admin_client.get(button(jobs["running"][0], "cancel")).content.decode()
    assert "only a queued job can be cancelled, so there is nothing to cancel" in body
    assert 'name="post"' not in body


def test_cancel_action_asks_first_listing_the_jobs(admin_client, jobs):
    selected = [j.pk for j in jobs["queued"][:2] + jobs["done"]]
    confirm = admin_client.post(LIST + "?status=all", {"action": "cancel_jobs", "_selected_action": selected})
    body = confirm.content.decode()
    assert confirm.status_code == 200 and "Are you sure you want to cancel these 2 queued jobs?" in body
    assert "1 other selected job is not queued and will be left as it is." in body
    for job in jobs["queued"][:2]:
        assert f"Job {job.pk}: song “{job.song.title}”" in body
    assert GenerationQueue.objects.filter(pk__in=selected, status="cancelled").count() == 0
    hidden = dict.fromkeys(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', body))
    assert [pair for pair in hidden if pair[0] == "_selected_action"] == [("_selected_action", str(pk))
                                                                       for pk in selected]
    data: dict[str, list[str]] = {}
    for name, value in hidden:
        data.setdefault(name, []).append(value)
    response = admin_client.post(LIST + "?status=all", data, follow=True)
    assert sorted(messages_of(response)) == sorted([
        "2 jobs cancelled. Their songs are marked failed; Retry (the action, or the job's page) puts a job back "
        "in the queue.",
        "1 job was already done, so it was not cancelled.",
    ])
    assert GenerationQueue.objects.filter(pk__in=selected, status="cancelled").count() == 2


def test_job_page_button_on_a_job_that_moved_on_says_why(admin_client, jobs):
    job = jobs["running"][0]
    response = admin_client.post(button(job, "cancel"), {"post": "yes"}, follow=True)
    assert messages_of(response) == ["1 job was already claimed by a worker, so it was not cancelled."]
    job.refresh_from_db()
    assert job.status == "running"


def test_buttons_are_post_only_csrf_protected_and_need_the_change_permission(jobs):
    job = jobs["failed"][0]
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(make_user(username="boss", is_staff=True, is_superuser=True))
    assert strict.get(button(job, "retry")).status_code == 405
    assert strict.post(button(job, "retry")).status_code == 403  # no CSRF token
    job.refresh_from_db()
    assert job.status == "failed"

    viewer = make_user(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_generationqueue"))
    client = Client()
    client.force_login(viewer)
    body = client.get(page(job)).content.decode()
    assert button(job, "retry") not in body
    assert client.post(button(job, "retry")).status_code == 403
    job.refresh_from_db()
    assert job.status == "failed"

    viewer.user_permissions.add(Permission.objects.get(codename="change_generationqueue"))
    client.force_login(viewer)
    assert button(job, "retry") in client.get(page(job)).content.decode()
    assert client.post(button(job, "retry")).status_code == 302
    job.refresh_from_db()
    assert job.status == "queued"
    for missing in ("999999", "not-a-number"):
        assert client.post(reverse("admin:queueing_generationqueue_retry", args=[missing])).status_code == 404


def test_actions_say_how_many_were_skipped_and_why(admin_client, jobs):
    selected = [j.pk for j in jobs["queued"][:1] + jobs["running"] + jobs["done"]]
    response = admin_client.post(LIST + "?status=all", {"action": "cancel_jobs", "_selected_action": selected,
                                                        "post": "yes"}, follow=True)
    assert sorted(messages_of(response)) == sorted([
        AFTER_ONE_CANCEL,
        "2 jobs were already claimed by a worker, so they were not cancelled.",
        "1 job was already done, so it was not cancelled.",
    ])
    assert GenerationQueue.objects.get(pk=jobs["queued"][0].pk).status == "cancelled"
    assert GenerationQueue.objects.filter(pk__in=[j.pk for j in jobs["running"]], status="running").count() == 2

    # A failed job whose song was requested again meanwhile cannot be retried: its song has an active job.
    blocked = jobs["failed"][1]
    GenerationQueue.objects.create(song_id=blocked.song_id)
    selected = [jobs["failed"][0].pk, blocked.pk] + [j.pk for j in jobs["queued"][1:]]
    response = admin_client.post(LIST + "?status=all", {"action": "retry_jobs", "_selected_action": selected},
                                 follow=True)
    assert sorted(messages_of(response)) == sorted([
        "1 job queued again.",
        "2 jobs were still queued, so they were not queued again.",
        "1 job's song already had a queued or running job, so it was not queued again.",
    ])
    assert GenerationQueue.objects.get(pk=blocked.pk).status == "failed"


def test_each_transition_is_recorded_in_the_admin_history(admin_client, jobs):
    retried, cancelled = jobs["failed"][0], jobs["queued"][0]
    admin_client.post(LIST + "?status=all", {"action": "retry_jobs", "_selected_action": [retried.pk]})
    admin_client.post(button(cancelled, "cancel"))
    admin_client.post(button(jobs["running"][0], "cancel"))  # skipped: nothing to record
    entries = LogEntry.objects.filter(content_type__model="generationqueue").order_by("pk")
    assert [(e.object_id, e.action_flag, e.get_change_message(), e.user.username) for e in entries] == [
        (str(retried.pk), CHANGE, "Retried: failed → queued.", "boss"),
        (str(cancelled.pk), CHANGE, "Cancelled: queued → cancelled.", "boss"),
    ]
    history = admin_client.get(reverse("admin:queueing_generationqueue_history", args=[retried.pk]))
    assert "Retried: failed → queued." in history.content.decode()


def test_job_page_is_read_only(admin_client, jobs):
    body = admin_client.get(page(jobs["queued"][0])).content.decode()
    assert 'name="status"' not in body and 'name="priority"' not in body and 'name="_save"' not in body
