"""The admin as an operator uses it, at 1366 × 768 and 1920 × 1080, against `make run`'s processes.

A real `runserver` (DEBUG on, so it serves the audio) and, where generation matters, a real
`runworker`, both on this test's database. With SONGSGEN_E2E_SCREENSHOTS=1 each step's screenshot is
written under bench/results/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import User
from queueing.models import GenerationQueue
from songs.demo import seed_demo_data
from songs.models import Song
from songs.services import song_request
from tests.devserver import dev_server, worker
from tests.e2e.conftest import TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

USERNAME, PASSWORD = "operator", "e2e-Correct-Horse-7"
VIEWPORTS = [pytest.param((1366, 768), id="1366x768"), pytest.param((1920, 1080), id="1920x1080")]
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
LONG_TITLE = ("An Extraordinarily Long Title For A Song That Keeps Going Past Any Column Width Anyone "
              "Would Choose, With A Subtitle (Extended Live Version Recorded In One Take)")
LONG_ERROR = "Generator returned HTTP 500: " + "upstream said no; " * 120


@pytest.fixture
def ops_data(settings, tmp_path: Path) -> dict[str, int]:
    """A demo database (seed_demo: realistic titles, users, failed jobs) plus the longest title and error."""
    settings.MEDIA_ROOT = tmp_path / "media"  # the dev server's media folder (SONGSGEN_DATA_DIR=tmp_path)
    # A hash the server process can check (the suite's fast MD5 hasher is not in its settings).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    User.objects.create_superuser(username=USERNAME, email="operator@example.com", password=PASSWORD)
    seed_demo_data(users=6, songs=160, seed=11)
    listener = User.objects.create_user(username="listener_with_a_rather_long_username_indeed",
                                        email="listener@example.com", password=PASSWORD)
    long_one = song_request(user=listener, title=LONG_TITLE, genre="soul")
    failed = GenerationQueue.objects.filter(status="failed").order_by("-id").first()
    GenerationQueue.objects.filter(pk=failed.pk).update(error_message=LONG_ERROR)
    completed = Song.objects.filter(status="completed").exclude(audio_file_path="").order_by("-id").first()
    return {"listener": listener.pk, "long_song": long_one.pk, "failed_job": failed.pk, "completed": completed.pk}


@pytest.fixture
def server_env(subprocess_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**subprocess_env, "SONGSGEN_DATA_DIR": str(tmp_path)}


@pytest.fixture
def server(server_env: dict[str, str]) -> Iterator[str]:
    with dev_server(server_env) as url:
        yield url


def open_page(chromium: Browser, url: str, viewport: tuple[int, int]) -> tuple[Page, list[str]]:
    """A logged-in page at this window size; the list collects any server error it meets."""
    width, height = viewport
    context = chromium.new_context(base_url=url, viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username:").fill(USERNAME)
    page.get_by_label("Password:").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    return page, errors


def shot(page: Page, name: str) -> None:
    """Keep a screenshot for a person, when asked (SONGSGEN_E2E_SCREENSHOTS=1)."""
    if os.environ.get("SONGSGEN_E2E_SCREENSHOTS") == "1":
        size = page.viewport_size or {"width": 0, "height": 0}
        RESULTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=RESULTS / f"admin-{name}-{size['width']}x{size['height']}.png", full_page=True)


def horizontal_overflow(page: Page) -> dict[str, float]:
    """How far the page and the list's table reach past the window or their box (0: no horizontal scroll)."""
    return page.evaluate("""() => {
        const width = window.innerWidth, results = document.querySelector('.results');
        const table = document.querySelector('#result_list');
        return {
            page: Math.max(0, document.documentElement.scrollWidth - width),
            table: table ? Math.max(0, Math.ceil(table.getBoundingClientRect().right - width)) : 0,
            results: results ? Math.max(0, results.scrollWidth - results.clientWidth) : 0,
        };
    }""")


def row_lines(page: Page, selector: str) -> list[int]:
    """For each cell matching selector, how many lines of text its row is tall."""
    return page.evaluate(f"""() => [...document.querySelectorAll({selector!r})].map(el => {{
        const style = getComputedStyle(el);
        const content = el.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
        return Math.round(content / parseFloat(style.lineHeight));
    }})""")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_lists_fit_the_window_one_line_a_row(ops_data, server, viewport, chromium: Browser) -> None:
    page, errors = open_page(chromium, server, viewport)
    width = viewport[0]

    page.goto("/admin/songs/song/")
    expect(page.locator("#result_list tbody tr")).to_have_count(100)
    assert horizontal_overflow(page) == {"page": 0, "table": 0, "results": 0}
    headers = page.locator("#result_list thead th").all_inner_texts()
    assert [h.strip().lower() for h in headers[1:]] == ["title", "user", "genre", "status", "created",
                                                        "completed", "plays"]
    assert set(row_lines(page, "#result_list tbody th, #result_list tbody td")) == {1}
    longest = page.locator(".clip-title", has_text="An Extraordinarily Long Title")
    assert longest.get_attribute("title") == LONG_TITLE  # the whole title on hover
    expect(page.locator("#result-count")).to_contain_text("161 songs")
    shot(page, "songs")

    page.goto("/admin/queueing/generationqueue/?status=all")
    expect(page.locator("#result_list tbody tr").first).to_be_visible()
    assert horizontal_overflow(page) == {"page": 0, "table": 0, "results": 0}
    assert set(row_lines(page, "#result_list tbody th, #result_list tbody td")) == {1}
    error = page.locator("#result_list .clip-error", has_text="Generator returned HTTP 500")
    assert error.get_attribute("title") == LONG_ERROR
    # Wide enough to read the start of an error (it was ~40 px wide at 1920 px).
    assert error.bounding_box()["width"] >= {1366: 200, 1920: 400}[width]
    badge = page.locator("#result_list .status-badge.status-failed").first
    assert badge.evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"
    shot(page, "queue")

    for url in (f"/admin/songs/song/{ops_data['long_song']}/change/",
                f"/admin/queueing/generationqueue/{ops_data['failed_job']}/change/"):
        page.goto(url)
        assert horizontal_overflow(page)["page"] == 0, url
    expect(page.locator(".field-error_message")).to_contain_text(LONG_ERROR.strip())  # the whole error
    shot(page, "job")
    assert not errors, errors


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_add_song_in_the_admin_is_generated_and_plays(ops_data, server_env, server, viewport,
                                                      chromium: Browser) -> None:
    page, errors = open_page(chromium, server, viewport)
    page.goto("/admin/songs/song/")
    page.get_by_role("link", name="Add song").click()
    page.locator("#id_user").fill(str(ops_data["listener"]))
    page.get_by_label("Title:").fill("Made In The Browser")
    genre = page.get_by_label("Genre:")
    assert "r&b" in genre.locator("option").all_inner_texts()  # the service's genres
    genre.select_option("jazz")
    page.get_by_label("Priority:").fill("9")  # ahead of the demo's backlog
    shot(page, "add-song")
    page.get_by_role("button", name="Save", exact=True).click()
    message = page.locator("ul.messagelist li.success")
    expect(message).to_contain_text("Made In The Browser (Pending)")
    message.get_by_role("link").click()
    status = page.locator(".field-status .readonly")
    expect(status).to_have_text("Pending")  # requested, and nothing generates it until a worker runs

    with worker(server_env):
        for _ in range(60):
            page.reload()
            if status.inner_text() == "Completed":
                break
            page.wait_for_timeout(500)
    expect(status).to_have_text("Completed")
    expect(page.locator("#queue_entries-group .status-badge")).to_have_text(["Done"])

    audio = page.locator(".field-audio audio[controls]")
    assert re.fullmatch(r"/media/songs/\d{6}/\d+\.wav", audio.get_attribute("src"))
    play_by_clicking(page)
    shot(page, "song-generated")
    assert not errors, errors


def play_by_clicking(page: Page) -> None:
    """Press the player's play button with the mouse, as a person does, and see the audio advance."""
    audio = page.locator(".field-audio audio[controls]")
    expect(audio).to_have_count(1)
    page.wait_for_function("document.querySelector('.field-audio audio').readyState >= 1")
    audio.scroll_into_view_if_needed()
    box = audio.bounding_box()
    assert box is not None and box["width"] >= 200 and box["height"] >= 20, f"the player is not visible: {box}"
    # Chromium draws the play button at the control's left end.
    page.mouse.click(box["x"] + 20, box["y"] + box["height"] / 2)
    page.wait_for_function("""() => {
        const a = document.querySelector('.field-audio audio');
        return !a.paused && a.currentTime > 0.2 && a.error === null;
    }""")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_completed_song_player_is_visible_and_plays_on_click(ops_data, server, viewport,
                                                             chromium: Browser) -> None:
    page, errors = open_page(chromium, server, viewport)
    page.goto(f"/admin/songs/song/{ops_data['completed']}/change/")
    expect(page.locator(".field-audio label")).to_have_text("Listen:")
    play_by_clicking(page)
    shot(page, "song-playing")
    assert not errors, errors


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_retry_and_cancel_from_the_job_page(ops_data, server, viewport, chromium: Browser) -> None:
    page, errors = open_page(chromium, server, viewport)
    job = ops_data["failed_job"]
    page.goto("/admin/queueing/generationqueue/?status=failed")
    page.locator("#result_list").get_by_role("link", name=str(job), exact=True).click()
    status = page.locator(".field-status .readonly")
    expect(status).to_have_text("Failed")
    expect(page.get_by_role("link", name="Delete")).to_have_count(0)
    expect(page.get_by_role("link", name="Cancel job")).to_have_count(0)
    shot(page, "job-failed")

    page.get_by_role("button", name="Retry").click()
    expect(page.locator("ul.messagelist li.success")).to_have_text("1 job queued again.")
    expect(status).to_have_text("Queued")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    # Cancel asks first: what it will do, and a button that does it; "No" changes nothing.
    page.get_by_role("link", name="Cancel job").click()
    expect(page.locator("#cancel-summary")).to_have_text("Are you sure you want to cancel this queued job?")
    expect(page.locator("#cancel-effects")).to_contain_text("Its song is marked failed.")
    shot(page, "job-cancel-confirm")
    page.get_by_role("link", name="No, take me back").click()
    expect(status).to_have_text("Queued")
    page.get_by_role("link", name="Cancel job").click()
    page.get_by_role("button", name="Yes, cancel the job").click()
    expect(page.locator("ul.messagelist li.success")).to_have_text(
        "1 job cancelled. Its song is marked failed; Retry on the job's page puts the job back in the queue.")
    expect(status).to_have_text("Cancelled")
    expect(page.locator("#job-cancelled-note")).to_contain_text("Retry puts the job back in the queue")
    expect(page.get_by_role("link", name="Cancel job")).to_have_count(0)
    shot(page, "job-cancelled")

    # And Retry undoes it.
    page.get_by_role("button", name="Retry").click()
    expect(page.locator("ul.messagelist li.success")).to_have_text("1 job queued again.")
    expect(status).to_have_text("Queued")

    page.get_by_role("link", name="History").click()
    history = page.locator("#change-history")
    expect(history).to_contain_text("Retried: failed → queued.")
    expect(history).to_contain_text("Cancelled: queued → cancelled.")
    expect(history).to_contain_text("Retried: cancelled → queued.")
    expect(history).to_contain_text(USERNAME)
    assert not errors, errors
