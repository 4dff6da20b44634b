"""Browser fixtures: a live server reachable over plain HTTP, and headless Debian Chromium.

The browser is the system's /usr/bin/chromium; nothing here downloads one (`playwright install` is
never run). Without it the browser tests skip on a developer's machine but fail in CI (CI=true),
so a CI image that lost its browser cannot pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test.utils import override_settings
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous for a page of a local server, short enough that a broken page fails fast.
TIMEOUT_MS = 10_000

# With DEBUG off, settings redirect every plain-HTTP request to https:// and mark the session and
# CSRF cookies Secure; the live server speaks HTTP only. SecurityMiddleware reads its settings once,
# when the server thread builds its handler, so they must be in force when the server starts.
PLAIN_HTTP = {
    "SECURE_SSL_REDIRECT": False,
    "SECURE_HSTS_SECONDS": 0,
    "SESSION_COOKIE_SECURE": False,
    "CSRF_COOKIE_SECURE": False,
}


@pytest.fixture(scope="session")
def live_server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """pytest-django's live server, started while the plain-HTTP settings are in force.

    Same name as pytest-django's fixture so its `_live_server_helper` still gives each test
    `transactional_db` and adds the server's host to ALLOWED_HOSTS. The test database is a real
    SQLite file (settings' TEST NAME), so the server thread opens its own connection to it and sees
    what the test commits.
    """
    addr = request.config.getvalue("liveserver") or os.environ.get("DJANGO_LIVE_TEST_SERVER_ADDRESS") or "localhost"
    with override_settings(**PLAIN_HTTP):
        server = LiveServer(addr)  # starts the thread and waits until its handler is built
    yield server
    server.stop()


@pytest.fixture
def plain_http(settings: Settings) -> None:
    """Cookie settings are read on every response: keep them off Secure for this test only."""
    for name, value in PLAIN_HTTP.items():
        setattr(settings, name, value)


@pytest.fixture
def fast_password_hasher(settings: Settings) -> None:
    """Logging in hashes a password on every test; the default hasher is slow by design."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def chromium() -> Iterator[Browser]:
    """Headless system Chromium; skipped without it locally, a failure without it in CI."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install Debian's chromium package (never `playwright install`)."
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser tests cannot run: {message}", pytrace=False)
        pytest.skip(message)
    # While the sync API runs, its event loop counts as running in this thread and Django refuses
    # ORM calls (SynchronousOnlyOperation): tests create their data in fixtures requested before
    # this one, and the function scope keeps the loop out of every other test.
    with sync_playwright() as pw:
        browser = _launch(pw)
        try:
            yield browser
        finally:
            browser.close()


def _launch(pw: Playwright) -> Browser:
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


@pytest.fixture
def admin_page(chromium: Browser, live_server: LiveServer, plain_http: None) -> Iterator[Page]:
    """A fresh browser page whose relative URLs go to the live server; server errors fail the test."""
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    server_errors: list[str] = []
    page.on("response", lambda r: server_errors.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    try:
        yield page
    finally:
        context.close()
    assert not server_errors, f"the live server answered with errors: {server_errors}"
