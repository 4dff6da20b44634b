"""With replicas configured, a request that wrote nothing leaves no session behind (no row, no cookie)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from django.contrib.sessions.models import Session

from tests.db.read_replicas.conftest import AdminSession
from tests.devserver import dev_server


def _post(session: AdminSession, path: str, data: dict[str, str]) -> tuple[int, str]:
    """One POST with the session's cookies (none for a new visitor): its status and Set-Cookie headers."""
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(session.base + path, data=body, headers={"Referer": session.base + path})
    try:
        with session.opener.open(request, timeout=30) as response:
            return response.status, " ".join(response.headers.get_all("Set-Cookie") or [])
    except urllib.error.HTTPError as answered:
        return answered.code, " ".join(answered.headers.get_all("Set-Cookie") or [])


def test_anonymous_posts_create_no_session_rows(replica, replica_env):
    """Anyone can POST to /admin/login/: refused or failed, those posts must not fill django_session with rows."""
    before = Session.objects.count()
    with dev_server(replica_env) as base:
        for n in range(5):
            status, cookies = _post(AdminSession(base), "/admin/login/", {"username": f"x{n}", "password": "y"})
            assert status == 403 and "sessionid" not in cookies, (status, cookies)  # no CSRF token: refused
        visitor = AdminSession(base)
        page = visitor.get("/admin/login/")
        token = page.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
        status, cookies = _post(visitor, "/admin/login/", {"username": "nobody", "password": "wrong",
                                                           "csrfmiddlewaretoken": token})
        assert status == 200 and "sessionid" not in cookies, (status, cookies)  # a failed login writes nothing
    assert Session.objects.count() == before
