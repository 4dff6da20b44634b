"""Browser fixtures: headless Debian Chromium and a page on pytest-django's live server.

tests/settings.py turns the HTTPS redirect and Secure cookies off, since the live server speaks HTTP.

The browser is the system's /usr/bin/chromium; nothing here downloads one (`playwright install` is
never run). Without it the browser tests skip on a developer's machine but fail in CI (CI=true),
so a CI image that lost its browser cannot pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
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
def admin_page(chromium: Browser, live_server: LiveServer) -> Iterator[Page]:
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
