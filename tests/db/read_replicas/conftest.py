"""A real streaming replica of the PostgreSQL test server, and an admin session over HTTP against a real server."""

from __future__ import annotations

import http.cookiejar
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.conftest import database_url_for
from tests.pgreplica import Replica, streaming_replica


@pytest.fixture(scope="module")
def replica(django_db_setup, django_db_blocker) -> Iterator[Replica]:
    """A hot standby of the test server (pg_basebackup -R), holding the test database under the same name."""
    from tests.pgserver import find_bindir

    if connection.vendor != "postgresql":
        pytest.skip("read replicas are PostgreSQL's (the PostgreSQL leg runs these)")
    bindir = os.environ.get("SONGSGEN_PG_BINDIR") or find_bindir()
    if not bindir or not (os.path.isfile(os.path.join(str(bindir), "pg_basebackup"))):
        message = "pg_basebackup not found"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " and CI=true: the replica tests must run.")
        pytest.skip(message)
    with django_db_blocker.unblock():
        primary = database_url_for(connection.settings_dict).rsplit("/", 1)[0] + "/postgres"
    with streaming_replica(primary) as running:
        yield running


@pytest.fixture
def replica_env(subprocess_env: dict[str, str], replica: Replica) -> dict[str, str]:
    """A subprocess environment reading from the replica (the test database's copy there)."""
    replica.set_delay(0)
    if replica.data.exists() and not (replica.data / "postmaster.pid").exists():
        replica.start()
    return dict(subprocess_env, DATABASE_REPLICA_URLS=replica.url(connection.settings_dict["NAME"]),
                SONGSGEN_CONN_MAX_AGE="60")


class AdminSession:
    """A person using the admin in a browser: cookies, CSRF tokens, redirects followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            return str(response.read().decode())

    def post(self, path: str, data: dict[str, str]) -> str:
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:500]
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token.group(1)}).encode()
        request = urllib.request.Request(self.base + path, data=body, headers={"Referer": self.base + path})
        with self.opener.open(request, timeout=30) as response:
            return str(response.read().decode())

    def login(self, username: str, password: str) -> None:
        page = self.post("/admin/login/?next=/admin/", {"username": username, "password": password,
                                                         "next": "/admin/"})
        assert "Log out" in page or "logout" in page, page[:500]


def served_by(page: str) -> str:
    """The database the change list names as the one that served it."""
    found = re.search(r'data-served-by="([^"]+)"', page)
    assert found, "the change list does not say which database served it"
    return found.group(1)
