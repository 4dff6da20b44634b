"""Both endpoints are closed: a bearer token or a staff login, else 401 (token configured) or 404 (none, DEBUG
off); open only in development (DEBUG on, no token)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.factories import make_user
from tests.monitoring.conftest import TOKEN, bearer

ENDPOINTS = ["/health?format=json", "/metrics"]


def opened(response) -> bool:
    """The endpoint answered with its content (/health is 500 here: the test's folder has no backup)."""
    content = response.content
    return response.status_code in (200, 500) and (b"songsgen_" in content or b'"database"' in content)


@pytest.mark.parametrize("url", ENDPOINTS)
def test_without_a_configured_token_in_production_they_do_not_exist(client, folders, settings, url):
    settings.METRICS_TOKEN = ""
    assert not settings.DEBUG
    for headers in ({}, bearer("guess"), bearer("")):
        response = client.get(url, **headers)
        assert response.status_code == 404 and b"songsgen" not in response.content


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_wrong_or_missing_token_is_401(client, folders, url):
    for headers in ({}, bearer("wrong-" + TOKEN), {"HTTP_AUTHORIZATION": TOKEN}, {"HTTP_AUTHORIZATION": "Basic x"}):
        response = client.get(url, **headers)
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
        assert b"songsgen_" not in response.content and b"database" not in response.content


@pytest.mark.parametrize("url", ENDPOINTS)
def test_the_bearer_token_opens_them(client, folders, url):
    response = client.get(url, **bearer())
    assert opened(response)
    assert "no-cache" in response["Cache-Control"] and "Authorization" in response["Vary"]


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("configured", [TOKEN, ""])
def test_staff_login_opens_them_and_other_users_do_not(client, folders, settings, url, configured):
    settings.METRICS_TOKEN = configured
    refused = 401 if configured else 404
    client.force_login(make_user(username="listener"))
    assert client.get(url).status_code == refused
    client.force_login(make_user(username="operator", is_staff=True))
    assert opened(client.get(url))


@pytest.mark.parametrize("url", ENDPOINTS)
def test_open_in_development_without_a_token(client, folders, settings, url):
    settings.METRICS_TOKEN, settings.DEBUG = "", True
    assert opened(client.get(url))


def test_through_a_real_http_server(live_server, folders):
    def fetch(path: str, token: str | None) -> int:
        request = urllib.request.Request(live_server.url + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as refused:
            return refused.code

    assert fetch("/metrics", TOKEN) == 200
    assert fetch("/metrics", None) == 401
    assert fetch("/health?format=json", "wrong") == 401
    assert fetch("/health?format=json", TOKEN) == 500  # served: no backup in the test's folder yet
