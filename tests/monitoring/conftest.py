"""Fixtures for /health and /metrics: a data and backup folder of the test's own, a token, real backups and
real migrate processes pointed at the same folders, and helpers to read the endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from queueing.models import GenerationQueue
from songsgen.db.backup import database_label, list_backups
from tests.conftest import REPO
from tests.factories import make_song

TOKEN = "test-metrics-token-" + "x" * 24


@pytest.fixture
def folders(settings, tmp_path, transactional_db) -> dict[str, Path]:
    """The data folder (crash marker, last-run record) and the backup folder, both the test's own."""
    data, backups = tmp_path / "data", tmp_path / "data" / "backups"
    data.mkdir()
    settings.DATA_DIR, settings.BACKUP_DIR = data, backups
    settings.STORAGES = {**settings.STORAGES, "dbbackup": {
        **settings.STORAGES["dbbackup"], "OPTIONS": {**settings.STORAGES["dbbackup"]["OPTIONS"],
                                                     "location": str(backups)}}}
    settings.METRICS_TOKEN = TOKEN
    return {"data": data, "backups": backups}


@pytest.fixture
def env(subprocess_env, folders) -> dict[str, str]:
    """A `manage.py` subprocess on the test database, writing to the test's folders."""
    return dict(subprocess_env, SONGSGEN_DATA_DIR=str(folders["data"]), SONGSGEN_BACKUP_DIR=str(folders["backups"]))


@pytest.fixture
def run(env) -> Callable[..., subprocess.CompletedProcess]:
    def go(*args: str, extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=dict(env, **(extra or {})),
                              cwd=REPO, capture_output=True, text=True, timeout=timeout)

    return go


@pytest.fixture
def fresh_backup(run, folders) -> Path:
    """A real backup by `manage.py dbbackup`, in the test's backup folder."""
    result = run("dbbackup")
    assert result.returncode == 0, result.stderr
    [made] = list_backups(os.listdir(folders["backups"]), database_label(connection.settings_dict))
    return folders["backups"] / made.name


def aged(backup: Path, hours: float) -> Path:
    """Rename a backup as if it had been made `hours` ago (its name carries its UTC time)."""
    moment = timezone.now() - timedelta(hours=hours)
    label = database_label(connection.settings_dict)
    old = backup.with_name(backup.name.replace(backup.name[len(label) + 1:len(label) + 19],
                                               moment.strftime("%Y-%m-%dT%H%M%SZ"), 1))
    backup.rename(old)
    return old


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def health(client: Client, **headers: Any) -> tuple[int, dict[str, str]]:
    """GET /health as JSON with the token: (status code, {check: "OK" or its error})."""
    response = client.get("/health", {"format": "json"}, **{**bearer(), **headers})
    return response.status_code, json.loads(response.content)


def scrape(client: Client, **headers: Any) -> dict[str, Any]:
    """GET /metrics with the token, parsed by the Prometheus text parser: {family name: family}."""
    response = client.get("/metrics", **{**bearer(), **headers})
    assert response.status_code == 200, response.content
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    """The one sample of `name` with these labels."""
    samples = [s for f in families.values() for s in f.samples if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(samples) == 1, (name, labels, samples)
    return float(samples[0].value)


def job(status: str = GenerationQueue.Status.QUEUED, **fields: Any) -> GenerationQueue:
    """A song's real queue entry (made through the service), then set as the test needs."""
    entry = make_song().queue_entries.get()
    GenerationQueue.objects.filter(pk=entry.pk).update(status=status, **fields)
    entry.refresh_from_db()
    return entry
