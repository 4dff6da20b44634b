"""Fixtures of the backup tests: a backup folder of the test's own, `manage.py` in it, a GPG home."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from songsgen.db.backup import snapshot


@pytest.fixture
def backup_dir(tmp_path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def env(subprocess_env, backup_dir) -> dict[str, str]:
    """A manage.py environment on the test database, with backups in a folder of this test's own."""
    return dict(subprocess_env, SONGSGEN_BACKUP_DIR=str(backup_dir), SONGSGEN_BACKUP_KEEP="7")


@pytest.fixture
def run(manage, env):
    def go(*args: str, extra: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
        return manage(*args, env=dict(env, **(extra or {})), **kwargs)

    return go


class ApiCopies(list):
    """The backup-API copies made through `spy` (the `api_copy` seam), by their arguments."""

    def spy(self, *args, **kwargs) -> None:
        self.append(args)
        snapshot(*args, **kwargs)


@pytest.fixture
def api_copies() -> ApiCopies:
    return ApiCopies()


@pytest.fixture
def gnupg_home(tmp_path):
    if not shutil.which("gpg"):
        pytest.skip("gpg is not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    genv = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "test-pass",
                    "--quick-gen-key", "backups@songsgen.invalid", "default", "default", "never"],
                   env=genv, check=True, capture_output=True, timeout=120)
    yield home
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=genv, capture_output=True, timeout=30)
