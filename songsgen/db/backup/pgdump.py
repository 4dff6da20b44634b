"""PostgreSQL snapshots with pg_dump, restored in one transaction.

`dump(settings_dict, target)` writes a custom-format archive. `restore(settings_dict, archive)` puts it
back so the database is exactly as it was when dumped, as one transaction: psql runs
`DROP SCHEMA public CASCADE; CREATE SCHEMA public;` followed by pg_restore's SQL, with ON_ERROR_STOP, and
commits only at the end. Other sessions see the old database until the commit and the restored one
after; a failure anywhere rolls everything back. Objects a half-applied migration created are dropped
with the schema, which a plain `pg_restore --clean` would leave behind.

The connecting role must own the `public` schema (in PostgreSQL 15 the database owner does).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from songsgen.db.exceptions import PgDumpError
from songsgen.db.pgconn import tool

CHUNK = 1 << 20


def _env(settings_dict: dict[str, Any]) -> dict[str, str]:
    """libpq environment for the database: the password never appears on a command line."""
    options = settings_dict.get("OPTIONS") or {}
    env = dict(os.environ)
    pairs = {
        "PGHOST": settings_dict.get("HOST") or "",
        "PGPORT": str(settings_dict.get("PORT") or ""),
        "PGUSER": settings_dict.get("USER") or "",
        "PGPASSWORD": settings_dict.get("PASSWORD") or "",
        "PGDATABASE": settings_dict.get("NAME") or "",
        "PGSSLMODE": options.get("sslmode", ""),
        "PGCONNECT_TIMEOUT": str(options.get("connect_timeout", "")),
    }
    env.update({k: v for k, v in pairs.items() if v})
    return env


def _fail(what: str, result: subprocess.CompletedProcess | None, stderr: str = "") -> PgDumpError:
    text = (stderr or (result.stderr if result else "") or "").strip().splitlines()
    return PgDumpError(f"{what} failed: {' / '.join(text[-3:]) or 'no message'}")


def dump(settings_dict: dict[str, Any], target: Path) -> None:
    """pg_dump the database into `target` (custom format); checks the archive reads back."""
    env = _env(settings_dict)
    result = subprocess.run(
        [tool("pg_dump"), "--format=custom", "--compress=1", f"--file={target}"],
        env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise _fail("pg_dump", result)
    listing = subprocess.run([tool("pg_restore"), "--list", str(target)], env=env, capture_output=True, text=True)
    if listing.returncode != 0:
        raise _fail("reading the pg_dump archive back", listing)


def check_songsgen_archive(settings_dict: dict[str, Any], archive: Path) -> None:
    """Refuse what is not a readable pg_dump archive of a migrated Django database."""
    listing = subprocess.run([tool("pg_restore"), "--list", str(archive)], env=_env(settings_dict),
                             capture_output=True, text=True)
    if listing.returncode != 0:
        raise _fail("reading the backup as a pg_dump archive", listing)
    if " TABLE DATA public django_migrations " not in listing.stdout:
        raise PgDumpError("the archive holds no django_migrations table: it is not a backup of this project")


def recorded_migrations(settings_dict: dict[str, Any], archive: Path) -> set[tuple[str, str]]:
    """The (app, name) rows of django_migrations in the archive, read from it without a server."""
    result = subprocess.run(
        [tool("pg_restore"), "--data-only", "--table=django_migrations", "--file=-", str(archive)],
        env=_env(settings_dict), capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise _fail("reading django_migrations from the pg_dump archive", result)
    rows: set[tuple[str, str]] = set()
    columns: list[str] | None = None
    for line in result.stdout.splitlines():
        if columns is None:
            if line.startswith("COPY ") and "django_migrations (" in line:
                columns = [c.strip() for c in line[line.index("(") + 1: line.index(")")].split(",")]
            continue
        if line == "\\.":
            break
        values = dict(zip(columns, (_copy_text(v) for v in line.split("\t")), strict=False))
        rows.add((values["app"], values["name"]))
    if columns is None:
        raise PgDumpError("the archive holds no django_migrations rows: not a backup of ours")
    return rows


def _copy_text(value: str) -> str:
    """A value in COPY's text format with its backslash escapes undone."""
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            char = {"t": "\t", "n": "\n", "r": "\r"}.get(escaped, escaped)
        out.append(char)
    return "".join(out)


def restore(settings_dict: dict[str, Any], archive: Path) -> None:
    """Make the database exactly what `archive` holds, in one transaction."""
    env = _env(settings_dict)
    script = subprocess.Popen(
        [tool("pg_restore"), "--file=-", str(archive)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    psql = subprocess.Popen(
        [tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-psqlrc"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert script.stdout is not None and psql.stdin is not None
    try:
        psql.stdin.write(b"BEGIN;\nDROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n")
        while chunk := script.stdout.read(CHUNK):
            psql.stdin.write(chunk)
        script.wait()
        if script.returncode == 0:
            psql.stdin.write(b"\nCOMMIT;\n")
        # Without COMMIT psql ends the session and the server rolls the transaction back.
        psql.stdin.close()
    except BrokenPipeError:
        # psql stopped on an error (its stderr says which); nobody reads pg_restore's output any more.
        script.kill()
    psql.wait()
    script.wait()
    if psql.returncode != 0:  # first: when psql stops, pg_restore is killed and has nothing to say
        raise _fail("psql (the restore was rolled back)", None,
                    psql.stderr.read().decode(errors="replace") if psql.stderr else "")
    if script.returncode != 0:
        raise _fail("pg_restore", None, script.stderr.read().decode(errors="replace") if script.stderr else "")
