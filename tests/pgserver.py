"""Run a command against a throwaway PostgreSQL server: `python -m tests.pgserver -- CMD …`.

The server lives in a temporary folder, listens on 127.0.0.1 only (and a socket in that folder),
requires a password over TCP, and is removed afterwards. PostgreSQL refuses to run as root, so
when we are root the server runs as the `postgres` system user. The command gets DATABASE_URL
(a superuser, so the test runner may create its test database) and exits with the command's code.

Exit code 3 means the PostgreSQL binaries are not installed (the caller decides what that means).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from songsgen.db import pgconn
from songsgen.db.exceptions import PgDumpError
from tests import pgmajors

NO_POSTGRES = 3
REPO = Path(__file__).resolve().parents[1]
# Where `make` unpacks the majors Debian does not offer (tests/pgmajors.py); SONGSGEN_PG_MAJORS overrides it.
MAJORS_DIR = Path(os.environ.get("SONGSGEN_PG_MAJORS", REPO / ".pgmajors"))


def find_bindir(major: int | None = None) -> Path | None:
    """The folder holding initdb and pg_ctl, or None: without `major` the one found the way pg_dump is for
    backups; with it, that major's (Debian's /usr/lib/postgresql/N, else the fetched wheels' folder)."""
    if major is None:
        try:
            folder = Path(pgconn.tool("initdb")).resolve().parent  # the real folder, not a symlink farm
        except PgDumpError:
            return None
        return folder if (folder / "pg_ctl").is_file() else None
    for folder in (Path(f"/usr/lib/postgresql/{major}/bin"), pgmajors.bindir(MAJORS_DIR, major)):
        if folder is not None and (folder / "pg_ctl").is_file() and server_major(folder) == major:
            return folder
    return None


def server_major(bindir: Path) -> int | None:
    """The major version of the server binaries in `bindir` (`postgres --version`), or None."""
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out.stdout)
    return int(found.group(1)) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def postgres_server(bindir: Path, *, logical: bool = False) -> Iterator[str]:
    """Start a server and yield its superuser DATABASE_URL; stop and delete it afterwards. `logical` sets
    wal_level=logical (a publisher for logical replication)."""
    root = Path(tempfile.mkdtemp(prefix="songsgen-pg-"))
    data, sock_dir = root / "data", root / "sock"
    sock_dir.mkdir()
    password = secrets.token_hex(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock_dir, "postgres")
        shutil.chown(pwfile, "postgres")
    os.chmod(root, 0o700)
    os.chmod(pwfile, 0o600)
    port = free_port()
    try:
        subprocess.run(
            _as_server_user([
                str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8",
                "--no-sync",
            ]),
            check=True, stdout=subprocess.DEVNULL,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100 "
            "-c shared_buffers=256MB"
        )
        if logical:
            options += " -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10"
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                             "-o", options, "-w", "-t", "60", "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )
        yield f"postgres://postgres:{password}@127.0.0.1:{port}/postgres"
    finally:
        if data.exists():
            subprocess.run(
                _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        for _ in range(20):  # the server may take a moment to release its files
            try:
                shutil.rmtree(root)
                break
            except OSError:
                time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--major", type=int, help="this PostgreSQL major (default: the one pg_dump is found as)")
    parser.add_argument("--logical", action="store_true", help="wal_level=logical")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] or ["true"]
    bindir = find_bindir(args.major)
    if bindir is None:
        sys.stderr.write("PostgreSQL binaries (initdb, pg_ctl) not found.\n")
        return NO_POSTGRES
    with postgres_server(bindir, logical=args.logical) as url:
        env = dict(os.environ, DATABASE_URL=url, SONGSGEN_PG_BINDIR=str(bindir))
        sys.stderr.write(f"PostgreSQL {bindir} running on {url.rsplit('@', 1)[1]}\n")
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
