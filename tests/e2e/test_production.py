"""Production as docs/deploy.md runs it: gunicorn with the repository's config, DEBUG off, WhiteNoise, a worker.

The tests play nginx: every request carries the X-Forwarded-Proto header it sets, with
SONGSGEN_BEHIND_TLS_PROXY=1, so the HTTPS redirect, Secure cookies and HSTS stay on as in production. No TLS
proxy runs here, so the browser's forms come from http://127.0.0.1:PORT: CSRF_TRUSTED_ORIGINS names that origin,
where production names https://songs.example.com.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Response, expect

from accounts.models import User
from tests.devserver import PROXY_HEADERS, REPO, free_port, gunicorn, worker
from tests.e2e.conftest import TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

USERNAME, PASSWORD = "operator", "e2e-Correct-Horse-7"
TOKEN = secrets.token_urlsafe(32)
VIEWPORTS = [pytest.param((1366, 768), id="1366x768"), pytest.param((1920, 1080), id="1920x1080")]
HASHED_CSS = re.compile(r"/static/admin/css/base\.[0-9a-f]{12}\.css$")
# What the test suite's settings set for its own client and live server, which production never has.
TEST_ONLY = ("SONGSGEN_SECURE_SSL_REDIRECT", "SONGSGEN_SECURE_COOKIES", "DJANGO_SETTINGS_MODULE")


@pytest.fixture
def production_env(subprocess_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment of deploy/songsgen.env.example, filled in, on this test's database."""
    env = {k: v for k, v in subprocess_env.items() if k not in TEST_ONLY}
    bind = f"127.0.0.1:{free_port()}"
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "songsgen.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SONGSGEN_DATA_DIR": str(tmp_path),
        "SONGSGEN_METRICS_TOKEN": TOKEN,
        "SONGSGEN_BEHIND_TLS_PROXY": "1",
        "SONGSGEN_WEB_WORKERS": "2",
        "SONGSGEN_WEB_BIND": bind,
        "CSRF_TRUSTED_ORIGINS": f"http://{bind}",
        # No backup in a test database: /health's backup check is the backup tests' business.
        "SONGSGEN_HEALTH_BACKUP_MAX_AGE_HOURS": "0",
    }


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def operator(settings) -> int:
    """A superuser whose password the server can check, and a listener's id for the song form."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    User.objects.create_superuser(username=USERNAME, email="operator@example.com", password=PASSWORD)
    return User.objects.create_user(username="listener", email="listener@example.com", password=PASSWORD).pk


@pytest.fixture
def collected(production_env: dict[str, str]) -> dict[str, str]:
    """`collectstatic` into the data folder's static/, as deployment does before gunicorn starts."""
    assert "post-processed" in manage(production_env, "collectstatic", "--noinput")
    return production_env


@pytest.fixture
def web(collected: dict[str, str]) -> Iterator[str]:
    """gunicorn as songsgen-web.service runs it; its URL."""
    with gunicorn(collected) as server:
        yield server.url


def get(url: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    """Status, body and headers of a GET that nginx proxied (no cookies: not the browser's session)."""
    request = urllib.request.Request(url, headers={**PROXY_HEADERS, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_production_serves_the_admin_and_the_worker_generates(
    operator: int, production_env: dict[str, str], web: str, viewport: tuple[int, int], chromium: Browser,
) -> None:
    width, height = viewport
    context = chromium.new_context(base_url=web, viewport={"width": width, "height": height},
                                   extra_http_headers=PROXY_HEADERS)
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r))

    # The login page and the admin's CSS: hashed names, served by WhiteNoise compressed and cached for ever.
    login = page.goto("/admin/login/?next=/admin/")
    assert login is not None and login.status == 200
    assert login.headers.get("strict-transport-security", "").startswith("max-age=31536000")
    css = [r for r in responses if HASHED_CSS.search(r.url)]
    assert len(css) == 1, [r.url for r in responses]
    assert css[0].status == 200 and css[0].headers["content-type"].startswith("text/css")
    assert "immutable" in css[0].headers["cache-control"]
    assert css[0].headers.get("content-encoding") == "gzip"
    assert not [r.url for r in responses if "/static/" in r.url and r.status != 200]
    # The stylesheet applies: the admin's header bar has its colour.
    header = page.locator("#header").evaluate("el => getComputedStyle(el).backgroundColor")
    assert header not in ("rgba(0, 0, 0, 0)", "transparent")

    page.get_by_label("Username:").fill(USERNAME)
    page.get_by_label("Password:").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    assert all(c["secure"] for c in context.cookies() if c["name"] in ("sessionid", "csrftoken"))

    # A song added in the admin is generated by a runworker beside gunicorn.
    page.goto("/admin/songs/song/add/")
    page.locator("#id_user").fill(str(operator))
    page.get_by_label("Title:").fill("Served By Gunicorn")
    page.get_by_label("Genre:").select_option("jazz")
    page.get_by_role("button", name="Save", exact=True).click()
    message = page.locator("ul.messagelist li.success")
    expect(message).to_contain_text("Served By Gunicorn (Pending)")
    message.get_by_role("link").click()
    status = page.locator(".field-status .readonly")
    expect(status).to_have_text("Pending")
    with worker(production_env):
        for _ in range(120):
            page.reload()
            if status.inner_text() == "Completed":
                break
            page.wait_for_timeout(500)
    expect(status).to_have_text("Completed")
    expect(page.locator("#queue_entries-group .status-badge")).to_have_text(["Done"])
    server_errors = [f"{r.status} {r.url}" for r in responses if r.status >= 500]
    context.close()
    assert not server_errors, server_errors

    # /health: 200 to the monitoring's token, 401 to anyone else (docs/monitoring.md).
    code, body, _ = get(f"{web}/health?format=json", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200, body
    assert json.loads(body)
    code, body, headers = get(f"{web}/health", {})
    assert code == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), (code, body)


def test_sigterm_lets_the_request_in_flight_finish(collected: dict[str, str], tmp_path: Path) -> None:
    """systemd's stop (SIGTERM) waits for a request in flight, which gets its whole answer."""
    slow = tmp_path / "slow"
    slow.mkdir()
    # Production settings plus a test-only /slow URL that answers once the test releases it.
    env = {**collected, "DJANGO_SETTINGS_MODULE": "tests.e2e.slow_settings",
           "SONGSGEN_TEST_SLOW_DIR": str(slow), "SONGSGEN_WEB_WORKERS": "1"}
    answers: list[tuple[int, str, dict[str, str]]] = []
    with gunicorn(env) as server:
        request = threading.Thread(target=lambda: answers.append(get(f"{server.url}/slow", {})))
        request.start()
        for _ in range(600):
            if (slow / "started").exists():
                break
            request.join(0.05)
        assert (slow / "started").exists(), server.output()

        popen = server.process.popen
        popen.send_signal(signal.SIGTERM)
        for _ in range(600):
            if "Handling signal: term" in server.output():
                break
            request.join(0.05)
        assert "Handling signal: term" in server.output()
        # Signalled, and still waiting for the request rather than gone.
        assert popen.poll() is None and request.is_alive() and not answers

        (slow / "release").touch()
        request.join(60)
        assert answers and answers[0][:2] == (200, "finished after release"), (answers, server.output())
        assert popen.wait(timeout=60) == 0, server.output()
        assert '"GET /slow HTTP/1.1" 200' in server.output()
