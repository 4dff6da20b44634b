"""A throwaway PgBouncer in front of a test PostgreSQL server, with an admin console.

`pgbouncer_for(server_url, dbname)` starts Debian's pgbouncer (transaction pooling, as the documented
production setup; PAUSE then waits for transactions, not sessions) on a free port of 127.0.0.1, as the
`postgres` user when we are root (PgBouncer refuses to run as root), and yields a `Bouncer`: the URL the
application connects to, the admin console's URL and the config file `pgupgrade` rewrites at cutover.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.pgserver import free_port

BINARY = "/usr/sbin/pgbouncer"


def find_pgbouncer() -> str | None:
    """The pgbouncer binary (Debian's package), or None."""
    return shutil.which("pgbouncer") or (BINARY if os.path.isfile(BINARY) else None)


@dataclass(frozen=True)
class Bouncer:
    """A running PgBouncer: what the application and the operator use."""

    url: str  # the application's DATABASE_URL, through PgBouncer
    admin_url: str  # the admin console (database "pgbouncer")
    config: Path  # the ini file, with a [databases] entry named like the database
    log: Path


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}")


@contextmanager
def pgbouncer_for(server_url: str, dbname: str) -> Iterator[Bouncer]:
    """Run PgBouncer for database `dbname` of the server at `server_url`; stop it and delete its files after."""
    binary = find_pgbouncer()
    if binary is None:
        raise RuntimeError("pgbouncer not found: apt-get install pgbouncer")
    parts = urlsplit(server_url)
    user, password = parts.username or "postgres", parts.password or ""
    root = Path(tempfile.mkdtemp(prefix="songsgen-pgbouncer-"))
    port = free_port()
    config, users, log = root / "pgbouncer.ini", root / "userlist.txt", root / "pgbouncer.log"
    config.write_text(
        "[databases]\n"
        f"{dbname} = host={parts.hostname} port={parts.port} dbname={dbname}\n"
        "\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {root}\n"
        f"auth_type = scram-sha-256\nauth_file = {users}\nadmin_users = {user}\n"
        "pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 20\n"
        "server_reset_query =\nignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {log}\n"
    )
    users.write_text(f'"{user}" "{password}"\n')
    if os.geteuid() == 0:
        for path in (root, config, users):
            shutil.chown(path, "postgres")
    os.chmod(root, 0o700)
    users.chmod(0o600)
    cmd = [binary, str(config)]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, log)
        base = f"postgres://{user}:{password}@127.0.0.1:{port}"
        yield Bouncer(url=f"{base}/{dbname}", admin_url=f"{base}/pgbouncer", config=config, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
