"""`migrate --rehearse`: apply the plan to a scratch copy of the snapshot, measure each migration.

The plan runs in a process whose only database is the copy, so nothing can reach the live one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db import backup, pgconn
from songsgen.db.backup import pgdump
from songsgen.db.exceptions import PgDumpError, RehearsalError
from songsgen.db.migrate.rehearse_child import DATABASE_ENV, Rehearsal, RehearsedStep

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

SCRATCH_PREFIX = "songsgen_rehearse_"  # PostgreSQL scratch databases
FILE_PREFIX = ".rehearse-"  # SQLite scratch copies, beside the snapshot
# a scratch database's comment, then the live database's name
COMMENT_PREFIX = "songsgen rehearsal of "
CHILD = "import sys; from songsgen.db.migrate.rehearse_child import main; sys.exit(main(sys.argv))"


def scratch_comment(settings_dict: dict[str, Any]) -> str:
    """The comment a scratch database carries: whose copy it is."""
    return f"{COMMENT_PREFIX}{settings_dict['NAME']}"


# --- the scratch database
# ---------------------------------------------------------------------------
def scratch_room(snapshot: Path) -> tuple[int, int]:
    """(needed, free) bytes for a scratch copy of `snapshot` beside it: size x factor + margin."""
    needed = int(snapshot.stat().st_size * float(settings.MIGRATE_BACKUP_SIZE_FACTOR)) + int(
        settings.MIGRATE_BACKUP_MARGIN_BYTES)
    return needed, shutil.disk_usage(snapshot.parent).free


@contextmanager
def _scratch_sqlite(snapshot: Path, stem: str) -> Iterator[str]:
    """A private copy of the snapshot beside it, once there is room; removed with its WAL after."""
    needed, free = scratch_room(snapshot)
    if free < needed:
        raise RehearsalError(
            f"not enough room for the scratch copy in {snapshot.parent}: {free / 2**20:,.1f} MiB free, "
            f"{needed / 2**20:,.1f} MiB needed (the snapshot's size x {settings.MIGRATE_BACKUP_SIZE_FACTOR} + "
            f"{settings.MIGRATE_BACKUP_MARGIN_BYTES / 2**20:,.0f} MiB margin); free space or point "
            "SONGSGEN_BACKUP_DIR at a bigger disk"
        )
    # the file is 0600 (mkstemp)
    fd, name = tempfile.mkstemp(prefix=f"{FILE_PREFIX}{stem}-", suffix=".sqlite3", dir=snapshot.parent)
    try:
        try:
            with os.fdopen(fd, "wb") as out, open(snapshot, "rb") as source:
                shutil.copyfileobj(source, out, pgdump.CHUNK)
        except OSError as exc:
            raise RehearsalError(f"copying the snapshot to a scratch copy in {snapshot.parent} failed "
                                 f"({exc.strerror or exc})") from exc
        yield name
    finally:
        backup.remove_file(Path(name))


def _maintenance_connection(settings_dict: dict[str, Any]) -> psycopg.Connection[TupleRow]:
    """An autocommit connection to a database other than the live one, for CREATE/DROP DATABASE."""
    import psycopg

    failure: Exception | None = None
    for dbname in ("postgres", "template1"):
        try:
            return psycopg.connect(**pgconn.connect_params(settings_dict, dbname), autocommit=True)
        except psycopg.OperationalError as exc:
            failure = exc
    raise RehearsalError(f"cannot connect to the server's maintenance database: {failure}")


@contextmanager
def _scratch_postgres(settings_dict: dict[str, Any], snapshot: Path) -> Iterator[str]:
    """A new database with the live one's encoding and locale, filled from the archive; dropped."""
    import psycopg
    from psycopg import sql

    name = f"{SCRATCH_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    admin = _maintenance_connection(settings_dict)
    try:
        row = admin.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            [settings_dict["NAME"]],
        ).fetchone()
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if row:
            create += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(*map(sql.Literal, row))
        try:
            admin.execute(create)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise RehearsalError(
                f"the role {settings_dict.get('USER') or '(default)'} may not create databases, and a rehearsal "
                "needs a scratch database: grant it with ALTER ROLE … CREATEDB, or migrate without --rehearse."
            ) from exc
        # Named for the live database, so the next migrate or dbcheck knows a killed rehearsal's
        # copy as ours.
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(scratch_comment(settings_dict))))
        try:
            try:
                pgdump.restore({**settings_dict, "NAME": name}, snapshot)
            except PgDumpError as exc:
                raise RehearsalError(f"restoring the snapshot into the scratch database failed: {exc}") from exc
            _settle({**settings_dict, "NAME": name})
            yield name
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


def _settle(settings_dict: dict[str, Any]) -> None:
    """VACUUM (ANALYZE) the restored copy: it looks like a live database autovacuum keeps up with.

    Otherwise autovacuum starts on every table just loaded and a migration's DDL queues behind
    it, and the first scans set every row's hint bits: both would be counted as lock time the
    live run does not have."""
    import psycopg

    with psycopg.connect(**pgconn.connect_params(settings_dict), autocommit=True) as scratch:
        scratch.execute("VACUUM (ANALYZE)")


# --- the rehearsal
# ----------------------------------------------------------------------------------
def rehearse(
    connection: BaseDatabaseWrapper,
    snapshot: Path,
    plan_keys: list[tuple[str, str, bool]],
    *,
    log: Callable[[str], None] = lambda s: None,
) -> Rehearsal:
    """Apply the plan to a scratch copy of `snapshot` as live migrate would; report each migration.

    The live database is only read for its settings: neither this process nor the
    child connects to it."""
    clock = time.monotonic()
    if connection.vendor == "sqlite":
        scratch_db = _scratch_sqlite(snapshot, backup.sqlite_path(connection.settings_dict).stem)
    elif connection.vendor == "postgresql":
        scratch_db = _scratch_postgres(connection.settings_dict, snapshot)
    else:
        raise RehearsalError(f"no rehearsal for a {connection.vendor} database")
    with scratch_db as name:
        log(f"Rehearsing {len(plan_keys)} migration(s) on a scratch copy of {snapshot.name} ({name}), "
            "in a process whose only database is the copy ...")
        rehearsal = _run_child(connection.settings_dict, name, plan_keys, log)
    # the copy's making and removal included, as before
    rehearsal.seconds = time.monotonic() - clock
    return rehearsal


def _scratch_url(scratch: dict[str, Any]) -> str:
    """A DATABASE_URL naming the scratch copy: nothing in the child's environment names live."""
    if str(scratch["ENGINE"]).endswith("sqlite3"):
        return f"sqlite:///{Path(scratch['NAME']).resolve()}"
    user, password = quote(str(scratch.get("USER") or ""), safe=""), quote(str(scratch.get("PASSWORD") or ""), safe="")
    auth = f"{user}{':' + password if password else ''}@" if user else ""
    port = f":{scratch['PORT']}" if scratch.get("PORT") else ""
    return f"postgres://{auth}{quote(str(scratch.get('HOST') or 'localhost'), safe='')}{port}/{quote(scratch['NAME'])}"


def _child_env(settings_dict: dict[str, Any], name: str) -> dict[str, str]:
    """This process's environment, with the scratch copy as the one database it names."""
    scratch = {**settings_dict, "NAME": name}
    try:
        encoded = json.dumps(scratch)
    except (TypeError, ValueError) as exc:
        raise RehearsalError(f"the database settings cannot be handed to the rehearsal process ({exc})") from exc
    env = dict(os.environ, DATABASE_URL=_scratch_url(scratch))
    env[DATABASE_ENV] = encoded
    # as this process found the project
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    return env


def _run_child(settings_dict: dict[str, Any], name: str, plan_keys: list[tuple[str, str, bool]],
               log: Callable[[str], None]) -> Rehearsal:
    """Run the plan in `python -m songsgen.db.migrate.rehearse_child` on copy `name`; its Rehearsal."""
    env = _child_env(settings_dict, name)
    with tempfile.TemporaryDirectory(prefix="songsgen-rehearsal-") as folder:
        result = Path(folder) / "rehearsal.json"
        try:  # its own session: a terminal's Ctrl-C reaches this process, which stops the child
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps(plan_keys), str(result), name], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise RehearsalError(f"the rehearsal process could not start ({exc})") from exc
        stderr: deque[str] = deque(maxlen=100)
        reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True)
        reader.start()
        try:
            for line in proc.stdout or ():
                log(line.rstrip("\n"))
            code = proc.wait()
        except BaseException:
            # Ctrl-C, or SIGTERM as migrate turns it into KeyboardInterrupt: the child first
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.join(timeout=10)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        return _read_result(result, code, [line.rstrip() for line in stderr])


def _read_result(result: Path, code: int, stderr: list[str]) -> Rehearsal:
    """The child's Rehearsal, or a one-line RehearsalError saying how it ended."""
    try:
        payload = json.loads(result.read_text())
    except (OSError, ValueError):
        payload = None
    if code == 0 and isinstance(payload, dict) and "rehearsal" in payload:
        try:
            return Rehearsal.from_dict(payload["rehearsal"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RehearsalError(f"the rehearsal process's report cannot be read ({type(exc).__name__}: {exc})"
                                 ) from exc
    if isinstance(payload, dict) and payload.get("error"):
        raise RehearsalError(f"the rehearsal process failed: {' '.join(str(payload['error']).split())}")
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    last = next((line.strip() for line in reversed(stderr) if line.strip()), "")
    raise RehearsalError(f"the rehearsal process {how} without a report" + (f" (it said: {last})" if last else ""))


def format_report(rehearsal: Rehearsal) -> list[str]:
    """The rehearsal as a table a person reads before deciding to migrate the live database."""
    rows = [("migration", "time", "lock held", "rows", "locks")]
    for step in rehearsal.steps:
        locks = ", ".join(step.locks) or "-"
        rows.append((step.migration, f"{step.seconds:.3f} s", f"{step.lock_seconds:.3f} s", str(step.rows), locks))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
             for row in rows]
    groups: dict[int, list[RehearsedStep]] = {}
    for step in rehearsal.steps:
        if step.transaction is not None:
            groups.setdefault(step.transaction, []).append(step)
    for group in groups.values():
        if len(group) > 1:
            lines.append(f"One transaction, as the live migrate runs them: {', '.join(s.migration for s in group)} "
                         f"(writers wait up to {max(s.lock_seconds for s in group):.3f} s).")
    lines += [f"Online in {step.migration}: {line}" for step in rehearsal.steps for line in step.online]
    lines += [f"FAILED {step.migration}: {step.error}" for step in rehearsal.steps if step.error]
    lines += [p.line() for p in rehearsal.verification]
    verdict = "ok" if rehearsal.ok else "FAILED"
    lines.append(f"Rehearsal {verdict} in {rehearsal.seconds:.2f} s on a scratch copy; the live database is untouched.")
    return lines
