"""Shared fixtures: a fast password hasher, and environments for real subprocesses."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def database_url_for(settings_dict: dict) -> str:
    """A DATABASE_URL naming the database a connection's settings point at (the test database)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    host, port = settings_dict.get("HOST") or "127.0.0.1", settings_dict.get("PORT") or 5432
    return f"postgres://{user}:{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def subprocess_env(transactional_db) -> dict[str, str]:
    """Environment for a `manage.py` subprocess that works on this test's database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for(connection.settings_dict)
    env.setdefault("SECRET_KEY", "test-only-secret-key-never-used-outside-the-test-suite")
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture
def manage(subprocess_env):
    """Run `manage.py ARGS` as a real process on the test database; returns CompletedProcess."""
    import subprocess

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120, **kwargs):
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            env=env or subprocess_env, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs,
        )

    return run


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL test server; its DATABASE_URL. Dropped afterwards."""
    import psycopg

    name = f"songsgen_empty_{os.getpid()}"
    server = database_url_for(connection.settings_dict).rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
