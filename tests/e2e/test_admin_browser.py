"""The admin in a real browser: log in, browse and filter songs, open one, cancel a queued job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from accounts.models import User
from queueing.models import GenerationQueue
from songs.models import Song
from songs.services import song_request

pytestmark = pytest.mark.browser

USERNAME = "operator"
PASSWORD = "e2e-Correct-Horse-7"
PENDING = ("Midnight Rain", "Desert Echoes", "Paper Lanterns")
COMPLETED = ("Golden Hour", "Neon Tide")
TO_CANCEL = "Desert Echoes"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def songs() -> dict[str, Song]:
    """A superuser and five songs: three pending with queued jobs, two completed with done jobs."""
    User.objects.create_superuser(username=USERNAME, email="operator@example.com", password=PASSWORD)
    listener = User.objects.create_user(username="listener", email="listener@example.com", password=PASSWORD)
    by_title = {title: song_request(user=listener, title=title, genre="ambient") for title in PENDING + COMPLETED}
    for title in COMPLETED:
        song = by_title[title]
        song.mark_generating()
        song.mark_completed(audio_file_path=f"songs/{song.pk}.mp3", generation_time=12.5)
    # What the worker does to the job of a finished song; the queue has no public transition for it.
    GenerationQueue.objects.filter(song__title__in=COMPLETED).update(
        status=GenerationQueue.Status.DONE, started_at=by_title[COMPLETED[0]].created_at
    )
    return by_title


def log_in(page: Page) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username:").fill(USERNAME)
    page.get_by_label("Password:").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()


def song_link(page: Page, title: str) -> Locator:
    return page.locator("#result_list").get_by_role("link", name=title, exact=True)


def test_admin_songs_and_queue(songs: dict[str, Song], admin_page: Page, tmp_path: Path) -> None:
    # `songs` comes before `admin_page`: the ORM is unusable once Playwright's event loop runs.
    page = admin_page
    log_in(page)

    # The songs list shows every song, newest first.
    page.goto("/admin/songs/song/")
    expect(page.get_by_role("heading", name="Select song to change")).to_be_visible()
    for title in PENDING + COMPLETED:
        expect(song_link(page, title)).to_be_visible()
    shot = tmp_path / "songs.png"
    page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"not a PNG screenshot: {len(data)} bytes"

    # The status filter in the sidebar narrows the list to pending songs.
    page.locator("#changelist-filter").get_by_role("link", name="Pending", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]status__exact=pending"))
    for title in PENDING:
        expect(song_link(page, title)).to_be_visible()
    for title in COMPLETED:
        expect(song_link(page, title)).to_have_count(0)

    # A song's page: its title in the form, its queued job in the read-only inline.
    song_link(page, PENDING[0]).click()
    expect(page.get_by_role("heading", name="Change song")).to_be_visible()
    expect(page.locator("#id_title")).to_have_value(PENDING[0])
    inline = page.locator("#queue_entries-group")
    expect(inline.get_by_role("heading", name="Generation queue")).to_be_visible()
    expect(inline.locator("tbody td.field-status_badge")).to_have_text(["Queued"])

    # The queue opens on the queued jobs: the pending songs', not the completed songs' done jobs.
    page.goto("/admin/queueing/generationqueue/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(len(PENDING))
    for title in PENDING:
        expect(rows.filter(has_text=title)).to_have_count(1)
    for title in COMPLETED:
        expect(rows.filter(has_text=title)).to_have_count(0)

    # Cancel one queued job through the action.
    rows.filter(has_text=TO_CANCEL).get_by_role("checkbox").check()
    page.get_by_label("Action:").select_option(label="Cancel selected queued jobs")
    page.get_by_role("button", name="Go").click()
    # It asks first, naming the job's song; nothing is cancelled until "Yes".
    expect(page.locator("#cancel-jobs")).to_contain_text(TO_CANCEL)
    page.get_by_role("button", name="Yes, cancel the job").click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text("1 job cancelled. Its song is marked failed")
    expect(rows).to_have_count(len(PENDING) - 1)
    expect(rows.filter(has_text=TO_CANCEL)).to_have_count(0)

    # Its song is now failed.
    page.goto("/admin/songs/song/")
    row = page.locator("#result_list tbody tr").filter(has=page.get_by_role("link", name=TO_CANCEL, exact=True))
    expect(row.locator("td.field-status_badge")).to_have_text("Failed")
    page.locator("#changelist-filter").get_by_role("link", name="Pending", exact=True).click()
    expect(song_link(page, TO_CANCEL)).to_have_count(0)
