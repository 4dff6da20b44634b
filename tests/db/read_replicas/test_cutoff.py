"""A replica cut off from the primary is judged against the primary's position, not its own receive position."""

from __future__ import annotations

import time

from tests.db.read_replicas.conftest import AdminSession, served_by
from tests.db.read_replicas.test_reads import CHANGELIST, _admin, _until_served_by_replica
from tests.devserver import dev_server
from tests.factories import make_user

LIMIT = 1  # SONGSGEN_REPLICA_MAX_LAG_SECONDS here


def test_a_replica_cut_off_from_the_primary_is_behind_and_pages_come_from_the_primary(replica, replica_env):
    """A standby whose stream broke has replayed all it received; it must still count as behind once the primary
    wrote more, or readers see stale data forever."""
    _admin("reader")
    replica.wait_caught_up()
    env = dict(replica_env, SONGSGEN_REPLICA_MAX_LAG_SECONDS=str(LIMIT), SONGSGEN_REPLICA_CHECK_SECONDS="0.2")
    with dev_server(env) as base:
        reader = AdminSession(base)
        reader.login("reader", "pw-for-tests")
        replica.wait_caught_up()
        assert _until_served_by_replica(reader), "a reader without writes was not served by the replica"
        with replica.cut_off():
            make_user(username="written-while-cut-off")  # on the primary; the replica never receives it
            time.sleep(LIMIT + 1)  # the replica's last replayed commit is now older than the limit
            pages = [reader.get(CHANGELIST) for _ in range(3)]
            assert {served_by(page) for page in pages} == {"primary"}, pages[0][pages[0].find("served-by") - 100:][:300]
            assert "replica1 is " in pages[-1] and "behind (limit 1 s)" in pages[-1]
        replica.wait_caught_up()
        assert _until_served_by_replica(reader), "reads did not return to the replica once it streamed again"
