"""Settings come from the environment; production settings pass `check --deploy`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    ours = ("SONGSGEN_", "DJANGO_", "DEBUG", "SECRET_KEY", "DATABASE_URL")
    return {k: v for k, v in os.environ.items() if not k.startswith(ours)}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {**_clean_env(), **env}
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args], env=base, cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy(tmp_path):
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env={
            "SECRET_KEY": "x" * 20 + "-a-long-random-production-secret-key-" + "y" * 20,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "songs.example.com",
            "SONGSGEN_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_debug_off_without_secret_key_refuses_to_start(tmp_path):
    env = {"DEBUG": "0", "SONGSGEN_DATA_DIR": str(tmp_path)}
    result = _manage("check", "--deploy", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    server = subprocess.run(
        [sys.executable, "-c", "import songsgen.wsgi"], env={**_clean_env(), **env}, cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )
    assert server.returncode != 0 and "SECRET_KEY is not set" in server.stderr


def test_tooling_runs_without_secret_key(tmp_path):
    result = _manage("makemigrations", "--check", "--dry-run", env={"DEBUG": "0", "SONGSGEN_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout


def test_data_dir_and_database_url_from_environment(tmp_path):
    data = tmp_path / "somewhere" / "data"
    result = _manage(
        "shell", "-v0", "-c",
        "from django.conf import settings as s; print(s.DATABASES['default']['NAME']); print(s.BACKUP_DIR);"
        "print(s.MEDIA_ROOT)",
        env={"DEBUG": "1", "SONGSGEN_DATA_DIR": str(data)},
    )
    assert result.returncode == 0, result.stderr
    name, backups, media = result.stdout.split()
    assert name == str(data / "songs.db") and backups == str(data / "backups") and media == str(data / "media")
    # Created on demand by the first command that writes there, not by reading the settings (issue 26).
    assert not data.exists()
    assert _manage("migrate", "-v0", env={"DEBUG": "1", "SONGSGEN_DATA_DIR": str(data)}).returncode == 0
    assert (data / "songs.db").is_file()


def test_bad_database_url_is_a_clear_error(tmp_path):
    result = _manage("check", env={"DEBUG": "1", "SONGSGEN_DATA_DIR": str(tmp_path), "DATABASE_URL": "mysql://x/y"})
    assert result.returncode != 0
    assert "DATABASE_URL names a mysql:// database; songsgen runs on SQLite or PostgreSQL" in result.stderr


def test_postgresql_url_gives_production_connection_settings(tmp_path):
    # Parsing only: settings never connect, so no server is needed here.
    result = _manage(
        "shell", "-v0", "-c",
        "import json; from django.conf import settings as s; d = s.DATABASES['default'];"
        "print(json.dumps([d['ENGINE'], d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'], d['OPTIONS']]))",
        env={
            "DEBUG": "1", "SONGSGEN_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://songs:pw@db.example.com:5432/songs?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        },
    )
    assert result.returncode == 0, result.stderr
    engine, max_age, health_checks, options = json.loads(result.stdout)
    assert engine == "songsgen.db.migrate.postgresql"  # Django's backend, with the safe-DDL schema editor
    assert max_age == 60 and health_checks is True
    assert options == {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "connect_timeout": 10}

    result = _manage(
        "shell", "-v0", "-c", "from django.conf import settings as s; print(s.DATABASES['default']['OPTIONS'])",
        env={"DEBUG": "1", "SONGSGEN_DATA_DIR": str(tmp_path), "SONGSGEN_CONN_MAX_AGE": "0",
             "DATABASE_URL": "postgres://songs:pw@db.example.com/songs?connect_timeout=3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'connect_timeout': 3}"
