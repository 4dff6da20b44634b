"""Open a database named by a URL as a temporary connection alias, beside the project's own.

Nothing is written while opening; connection errors come back with the password masked.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.exceptions import DatabaseUnavailable

SQLITE = "django.db.backends.sqlite3"
POSTGRESQL = "django.db.backends.postgresql"


def mask_url(url: str, *, mask: str = ":***") -> str:
    """The URL with its password replaced by `mask` (*** for messages and logs; "" drops it)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}{mask}@{netloc[1]}"))


def settings_for_url(url: str) -> dict[str, Any]:
    """A DATABASES entry for `url`, built by the same rules as settings.py builds `default`."""
    try:
        db = dj_database_url.parse(url, conn_max_age=0)
    except Exception as exc:  # dj-database-url raises bare ValueError/KeyError for unknown schemes
        raise DatabaseUnavailable(f"{mask_url(url)} is not a database URL ({exc}).") from exc
    if db["ENGINE"] == SQLITE:
        if not db.get("NAME") or db["NAME"] == ":memory:":
            raise DatabaseUnavailable(f"{mask_url(url)}: give the SQLite file's path, e.g. sqlite:////srv/songs.db.")
        db["OPTIONS"] = dict(settings.SQLITE_OPTIONS)
    elif db["ENGINE"] in (POSTGRESQL, "django.db.backends.postgresql_psycopg2"):
        db["ENGINE"] = POSTGRESQL
        # OPTIONS from the query string (sslmode, sslrootcert, …) are kept as
        # dj-database-url parsed them.
        db.setdefault("OPTIONS", {}).setdefault("connect_timeout", settings.PG_CONNECT_TIMEOUT)
    else:
        raise DatabaseUnavailable(f"{mask_url(url)}: only SQLite and PostgreSQL URLs are supported.")
    db["CONN_MAX_AGE"] = 0  # one command's connection, closed at the end of the block
    return dict(db)  # a settings dict like any other (Django types them dict[str, Any])


@dataclass(frozen=True)
class Identity:
    """What makes two URLs the same database, learnt after connecting."""

    engine: str
    key: tuple[Any, ...]


def identity(connection: BaseDatabaseWrapper) -> Identity:
    """Who this database really is: the SQLite file, or the PostgreSQL server and database name."""
    if connection.vendor == "sqlite":
        path = Path(connection.settings_dict["NAME"])
        stat = path.stat()
        return Identity("sqlite", (stat.st_dev, stat.st_ino))
    with connection.cursor() as cursor:
        # Two URLs may name one server differently (localhost, 127.0.0.1, a socket): the
        # postmaster's start time and the port identify it; the database name completes the key.
        cursor.execute("SELECT pg_postmaster_start_time()::text, inet_server_port(), current_database()")
        return Identity("postgresql", tuple(cursor.fetchone()))


@contextmanager
def open_database(url: str, *, role: str) -> Iterator[BaseDatabaseWrapper]:
    """Connect to `url` under a temporary alias; `role` ("source", "target") names it in errors."""
    db = settings_for_url(url)
    if db["ENGINE"] == SQLITE and not os.path.isfile(db["NAME"]):
        raise DatabaseUnavailable(
            f"The {role} database {db['NAME']} does not exist. Create it first with "
            f"`DATABASE_URL={url} python manage.py migrate`."
        )
    alias = f"songsgen_{role}_{uuid.uuid4().hex[:8]}"
    connections.settings[alias] = connections.configure_settings({"default": db})["default"]
    connection = connections[alias]
    try:
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"Cannot connect to the {role} database {mask_url(url)}: {first_line}") from exc
        yield connection
    finally:
        connection.close()
        del connections[alias]
        del connections.settings[alias]
