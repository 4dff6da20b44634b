"""A streaming replica of a throwaway PostgreSQL server (`tests.pgserver`): `pg_basebackup -R` on 127.0.0.1.

`python -m tests.pgreplica -- CMD …` runs CMD with DATABASE_URL (the primary) and DATABASE_REPLICA_URLS (its
replica); the tests start one with `streaming_replica(primary_url)`. The replica's `recovery_min_apply_delay`
gives a lag on demand; `stop()` and `start()` take it away and bring it back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.sql

from tests.pgserver import NO_POSTGRES, _as_server_user, find_bindir, free_port, postgres_server


@dataclass
class Replica:
    """A running hot standby of `primary_url`; `url` is the same database name on the replica's port."""

    bindir: Path
    data: Path
    log: Path
    port: int
    primary_url: str

    def url(self, database: str | None = None) -> str:
        """The primary's URL with the replica's port (and `database` instead of the primary's, if given)."""
        parts = urlsplit(self.primary_url)
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{self.port}"
        path = f"/{database}" if database else parts.path
        return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        """Start the replica (it reconnects to the primary and replays what it missed)."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.data.parent} "
                   "-c hot_standby=on -c fsync=off -c max_connections=100 -c hot_standby_feedback=on")
        self._ctl("-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Stop the replica: its clients are cut off and new connections are refused."""
        self._ctl("-m", "fast", "-w", "stop")

    def set_delay(self, seconds: float) -> None:
        """`recovery_min_apply_delay` on the replica (ALTER SYSTEM + reload): a lag of about `seconds` on demand."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
            conn.execute("SELECT pg_reload_conf()")

    @contextmanager
    def cut_off(self) -> Iterator[None]:
        """Inside, the replica streams from a closed port (primary_conninfo + reload): it answers but gets nothing."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            original = str(conn.execute("SHOW primary_conninfo").fetchone()[0])  # type: ignore[index]
            conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
                psycopg.sql.Literal(f"host=127.0.0.1 port={free_port()} user=nobody connect_timeout=1")))
            conn.execute("SELECT pg_reload_conf()")
            while conn.execute("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'").fetchone() \
                    != (0,):  # until the walreceiver that streamed from the primary has gone
                time.sleep(0.05)
        try:
            yield
        finally:
            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
                    psycopg.sql.Literal(original)))
                conn.execute("SELECT pg_reload_conf()")

    def wait_caught_up(self, timeout: float = 60) -> None:
        """Until the replica has replayed everything the primary had written when this was called."""
        with psycopg.connect(self.primary_url, autocommit=True) as primary_conn:
            target = primary_conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)).fetchone()
                if row and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"the replica did not replay up to {target} within {timeout} s")
                time.sleep(0.05)


@contextmanager
def streaming_replica(primary_url: str, bindir: Path | None = None) -> Iterator[Replica]:
    """A hot standby of the server at `primary_url` (a superuser's URL), started; stopped and removed afterwards."""
    bindir = bindir or (Path(os.environ["SONGSGEN_PG_BINDIR"]) if os.environ.get("SONGSGEN_PG_BINDIR")
                        else find_bindir())
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries (pg_basebackup, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="songsgen-replica-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    os.chmod(root, 0o700)
    parts = urlsplit(primary_url)
    env = dict(os.environ, PGPASSWORD=parts.password or "")
    replica = Replica(bindir, data, root / "replica.log", free_port(), primary_url)
    try:
        subprocess.run(
            _as_server_user([str(bindir / "pg_basebackup"), "-h", parts.hostname or "127.0.0.1",
                             "-p", str(parts.port or 5432), "-U", parts.username or "postgres", "-D", str(data),
                             "-R", "-X", "stream", "-c", "fast", "--no-sync"]),
            check=True, env=env, stdout=subprocess.DEVNULL,
        )
        replica.start()
        yield replica
    finally:
        if data.exists():
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                            "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.0, help="recovery_min_apply_delay on the replica (s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] or ["true"]
    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_basebackup").is_file():
        sys.stderr.write("PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) not found.\n")
        return NO_POSTGRES
    with postgres_server(bindir) as url, streaming_replica(url, bindir) as replica:
        if args.delay:
            replica.set_delay(args.delay)
        env = dict(os.environ, DATABASE_URL=url, DATABASE_REPLICA_URLS=replica.url(), SONGSGEN_PG_BINDIR=str(bindir))
        sys.stderr.write(f"PostgreSQL primary on {url.rsplit('@', 1)[1]}, its replica on port {replica.port}\n")
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
