"""Who the user is and what they may do is read from the primary, however far behind the replica is."""

from __future__ import annotations

import urllib.error
import urllib.request

from accounts.models import User
from tests.db.read_replicas.conftest import AdminSession
from tests.db.read_replicas.test_reads import CHANGELIST, _admin, _until_served_by_replica
from tests.devserver import dev_server


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def _status(session: AdminSession, path: str) -> tuple[int, str]:
    """The status and Location of one GET with the session's cookies, redirects not followed."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(session.jar), _NoRedirect)
    try:
        with opener.open(session.base + path, timeout=30) as response:
            return response.status, ""
    except urllib.error.HTTPError as answered:
        return answered.code, answered.headers.get("Location", "")


def test_a_deactivated_staff_member_loses_the_admin_at_once_while_the_replica_lags(replica, replica_env):
    """Deactivating a staff account must take effect on their next request, not once the replica replays it."""
    staff = _admin("staff-to-lock-out")
    replica.wait_caught_up()
    env = dict(replica_env, SONGSGEN_REPLICA_MAX_LAG_SECONDS="120")
    try:
        with dev_server(env) as base:
            session = AdminSession(base)
            session.login("staff-to-lock-out", "pw-for-tests")
            replica.wait_caught_up()
            assert _until_served_by_replica(session), "the replica does not serve this reader: this proves nothing"
            replica.set_delay(30)
            assert _status(session, "/admin/") == (200, "")
            User.objects.filter(pk=staff.pk).update(is_active=False)  # another admin locks the account, on the primary
            status, location = _status(session, "/admin/")
            assert status == 302 and location.startswith("/admin/login/"), (status, location)
            assert _status(session, CHANGELIST)[0] == 302
    finally:
        replica.set_delay(0)
