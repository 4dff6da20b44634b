"""Backup storage, naming and retention (songsgen/db/backup/storage.py) on a real folder."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from songsgen.db.backup import (
    TEMP_PREFIX,
    AtomicFileSystemStorage,
    backup_created,
    backup_filename,
    database_label,
    latest_backup,
    list_backups,
    prune_backups,
)
from songsgen.db.exceptions import BackupError


@pytest.fixture
def storage(tmp_path) -> AtomicFileSystemStorage:
    return AtomicFileSystemStorage(location=str(tmp_path / "backups"), file_permissions_mode=0o600,
                                   directory_permissions_mode=0o700)


def _store(storage: AtomicFileSystemStorage, *names: str) -> None:
    for name in names:
        storage.save(name, ContentFile(name.encode()))
        storage.save(f"{name}.metadata", ContentFile(b"{}"))


def test_the_label_is_the_databases_own_name():
    assert database_label({"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/data/songs.db"}) == "songs"
    assert database_label({"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/a.b/prod.sqlite3"}) == "prod"
    assert database_label({"ENGINE": "django.db.backends.postgresql", "NAME": "songsgen"}) == "songsgen"


def test_a_filename_holds_the_label_and_the_utc_time_and_reads_back():
    local = datetime(2030, 1, 1, 2, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    name = backup_filename("sqlite3.zst", "songs", moment=local)
    assert name == "songs-2030-01-01T003015Z.sqlite3.zst"
    assert backup_created(name) == local
    assert backup_created(f"{name}.gpg") == local
    assert backup_created("notes.txt") is None


def test_list_backups_finds_one_databases_backups_newest_first():
    names = [
        "songs-2030-01-02T000000Z.sqlite3.zst", "songs-2030-01-03T000000Z.sqlite3.zst.gpg",
        "songs-2030-01-01T000000Z.sqlite3.zst", "songs-2030-01-03T000000Z.sqlite3.zst.metadata",
        "songsdb-2030-01-04T000000Z.sqlite3.zst", "other-2030-01-05T000000Z.sqlite3.zst",
        f"{TEMP_PREFIX}123-abcd.zst", "notes.txt",
    ]
    found = list_backups(names, "songs")
    assert [b.name for b in found] == [
        "songs-2030-01-03T000000Z.sqlite3.zst.gpg", "songs-2030-01-02T000000Z.sqlite3.zst",
        "songs-2030-01-01T000000Z.sqlite3.zst",
    ]
    assert [b.encrypted for b in found] == [True, False, False]
    assert found[0].created == datetime(2030, 1, 3, tzinfo=UTC)


def test_prune_keeps_the_newest_and_the_protected_and_deletes_the_rest_with_their_metadata(storage):
    ours = [f"songs-2030-01-0{day}T000000Z.sqlite3.zst" for day in range(1, 6)]
    _store(storage, *ours, "other-2029-01-01T000000Z.sqlite3.zst")
    storage.save("notes.txt", ContentFile(b"keep me"))

    deleted = prune_backups(storage, "songs", keep=2, protect=[ours[0]])

    assert sorted(deleted) == ours[1:4]
    assert sorted(storage.listdir("")[1]) == sorted([
        ours[0], f"{ours[0]}.metadata", ours[4], f"{ours[4]}.metadata", "notes.txt",
        "other-2029-01-01T000000Z.sqlite3.zst", "other-2029-01-01T000000Z.sqlite3.zst.metadata",
    ])
    with pytest.raises(BackupError, match="SONGSGEN_BACKUP_KEEP >= 1"):
        prune_backups(storage, "songs", keep=0)
    assert storage.exists(ours[4])


def test_latest_backup_is_the_newest_of_the_kind_asked_for(storage):
    with pytest.raises(BackupError) as none:
        latest_backup(storage, "songs")
    assert str(none.value) == (f"No backup of database 'songs' in {storage.location}; make one with "
                               "`manage.py dbbackup`.")
    _store(storage, "songs-2030-01-01T000000Z.sqlite3.zst", "songs-2030-01-02T000000Z.sqlite3.zst.gpg")
    assert latest_backup(storage, "songs").name == "songs-2030-01-02T000000Z.sqlite3.zst.gpg"
    assert latest_backup(storage, "songs", encrypted=False).name == "songs-2030-01-01T000000Z.sqlite3.zst"
    assert latest_backup(storage, "songs", encrypted=True).name == "songs-2030-01-02T000000Z.sqlite3.zst.gpg"


def test_the_storage_never_writes_over_a_backup_and_keeps_it_owner_only(storage):
    old = os.umask(0)  # the modes must not depend on the umask
    try:
        assert storage.listdir("") == ([], [])  # no folder yet: no backups, no error
        first = storage.save("songs-2030-01-01T000000Z.sqlite3.zst", ContentFile(b"first"))
        second = storage.save("songs-2030-01-01T000000Z.sqlite3.zst", ContentFile(b"second"))
    finally:
        os.umask(old)
    folder = Path(storage.location)
    assert second != first
    assert (folder / first).read_bytes() == b"first" and (folder / second).read_bytes() == b"second"
    assert {(folder / n).stat().st_mode & 0o777 for n in (first, second)} == {0o600}
    assert folder.stat().st_mode & 0o777 == 0o700
    assert not [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
