"""How to reach PostgreSQL: connection parameters from a Django settings dict, and its client programs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from songsgen.db.exceptions import PgDumpError


def connect_params(settings_dict: dict[str, Any], dbname: str | None = None) -> dict[str, Any]:
    """psycopg keywords for a Django PostgreSQL settings dict (`dbname` for another database of the server)."""
    options = settings_dict.get("OPTIONS") or {}
    params = {
        "dbname": dbname or settings_dict.get("NAME"), "user": settings_dict.get("USER"),
        "password": settings_dict.get("PASSWORD"), "host": settings_dict.get("HOST"),
        "port": settings_dict.get("PORT"),
        **{k: v for k, v in options.items() if k in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")},
    }
    return {k: v for k, v in params.items() if v not in (None, "")}


def tool(name: str) -> str:
    """The path of a PostgreSQL client program: SONGSGEN_PG_BINDIR first, then PATH, then Debian's folders."""
    folders = [os.environ.get("SONGSGEN_PG_BINDIR", "")]
    found = shutil.which(name)
    if found:
        folders.append(str(Path(found).parent))
    folders += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for folder in folders:
        if folder and (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    raise PgDumpError(f"{name} not found: install the PostgreSQL client (postgresql-client) or set SONGSGEN_PG_BINDIR.")
