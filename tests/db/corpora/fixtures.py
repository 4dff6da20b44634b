"""The corpus tests' databases: one base with the project's migrations, a copy of it per case."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.conftest import REPO, database_url_for
from tests.db.corpora.harness import Database

ENGINE = connection.vendor


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    """A database holding the project's own migrations, copied for each case."""
    env = dict(os.environ, PYTHONPATH=str(REPO), DJANGO_SETTINGS_MODULE="tests.settings",
               SONGSGEN_DATA_DIR=str(tmp_path_factory.mktemp("corpora-base")))
    env.setdefault("SECRET_KEY", "test-only-secret-key-never-used-outside-the-test-suite")
    if ENGINE == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('corpora') / 'base.sqlite3'}"
    else:
        import psycopg

        server = database_url_for(connection.settings_dict).rsplit("/", 1)[0]
        url = f"{server}/songsgen_corpora_base_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
    env["DATABASE_URL"] = url
    done = subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "--plain", "-v0"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    yield url
    if ENGINE != "sqlite":
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture
def case_db(base_url, tmp_path, request) -> Iterator[Database]:
    """The case's own copy of the base database."""
    if ENGINE == "sqlite":
        path = tmp_path / "case.sqlite3"
        with sqlite3.connect(base_url.removeprefix("sqlite:///")) as src, sqlite3.connect(path) as dest:
            src.backup(dest)
        yield Database(f"sqlite:///{path}")
        return
    import psycopg

    server, base = base_url.rsplit("/", 1)
    name = f"songsgen_corpus_{os.getpid()}_{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{base}"')
    try:
        yield Database(f"{server}/{name}")
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
