"""Files that appear only when complete (songsgen/db/backup/files.py), on a real folder."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from songsgen.db.backup import (
    TEMP_PREFIX,
    atomic_write,
    private_dir,
    remove_file,
    remove_stale_temp_files,
    replaced_when_complete,
    temp_path,
)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def _temporary(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]


def test_a_private_folder_is_owner_only_whatever_the_umask_and_an_existing_one_is_left_alone(tmp_path):
    old = os.umask(0)
    try:
        made = private_dir(tmp_path / "a" / "b")
        (tmp_path / "shared").mkdir(mode=0o755)
        kept = private_dir(tmp_path / "shared")
    finally:
        os.umask(old)
    assert made.stat().st_mode & 0o777 == 0o700
    assert kept.stat().st_mode & 0o777 == 0o755


def test_temporary_files_are_empty_owner_only_and_name_their_process(tmp_path):
    first, second = temp_path(tmp_path, ".sqlite3"), temp_path(tmp_path, ".sqlite3")
    assert first != second
    for path in (first, second):
        assert path.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-") and path.suffix == ".sqlite3"
        assert path.stat().st_size == 0 and path.stat().st_mode & 0o777 == 0o600


def test_stale_temporary_files_are_those_of_dead_processes(tmp_path):
    dead = tmp_path / f"{TEMP_PREFIX}{_dead_pid()}-0000.zst"
    ours = temp_path(tmp_path, ".zst")
    other = tmp_path / "songs-2030-01-01T000000Z.sqlite3.zst"
    for path in (dead, other):
        path.write_bytes(b"x")

    assert remove_stale_temp_files(tmp_path) == [dead]
    assert not dead.exists() and ours.exists() and other.exists()
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_remove_file_takes_sqlites_journal_files_with_it(tmp_path):
    db = tmp_path / "songs.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").write_bytes(b"x")
    (tmp_path / "songs.db.pre-restore-20300101T000000Z").write_bytes(b"kept")
    remove_file(db)
    remove_file(db)  # gone already: nothing to do
    assert os.listdir(tmp_path) == ["songs.db.pre-restore-20300101T000000Z"]


def test_atomic_write_copies_a_file_or_a_pipe_and_never_replaces_a_file(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "source").write_bytes(data)
    folder = tmp_path / "out"

    with open(tmp_path / "source", "rb") as source:
        source.seek(1000)  # a file is copied from its start, wherever it stands
        atomic_write(source, folder / "from-file", mode=0o640)
    with subprocess.Popen(["cat", str(tmp_path / "source")], stdout=subprocess.PIPE) as cat:
        atomic_write(cat.stdout, folder / "from-pipe")
    with open(tmp_path / "source", "rb") as source, pytest.raises(FileExistsError):
        atomic_write(source, folder / "from-pipe")

    assert (folder / "from-file").read_bytes() == data and (folder / "from-pipe").read_bytes() == data
    assert (folder / "from-file").stat().st_mode & 0o777 == 0o640
    assert (folder / "from-pipe").stat().st_mode & 0o777 == 0o600
    assert not _temporary(folder)


def test_atomic_write_names_our_own_temporary_file_without_copying_it(tmp_path):
    with tempfile.NamedTemporaryFile(dir=tmp_path, prefix=f"{TEMP_PREFIX}{os.getpid()}-") as packed:
        packed.write(b"packed backup")
        atomic_write(packed, tmp_path / "backup.zst")
        assert os.stat(tmp_path / "backup.zst").st_ino == os.fstat(packed.fileno()).st_ino  # the same file
    assert (tmp_path / "backup.zst").read_bytes() == b"packed backup"
    assert (tmp_path / "backup.zst").stat().st_mode & 0o777 == 0o600
    assert not _temporary(tmp_path)


@pytest.mark.parametrize("durable", [True, False])
def test_replaced_when_complete_shows_the_old_file_until_the_new_one_is_whole(durable, tmp_path):
    target = tmp_path / "song.wav"
    target.write_bytes(b"old")

    with replaced_when_complete(target, suffix=".tmp", mode=0o644, durable=durable) as tmp:
        tmp.write_bytes(b"new, half")
        assert target.read_bytes() == b"old"
        tmp.write_bytes(b"new, whole")
    assert target.read_bytes() == b"new, whole" and target.stat().st_mode & 0o777 == 0o644

    with pytest.raises(RuntimeError), replaced_when_complete(target) as tmp:
        tmp.write_bytes(b"never whole")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"new, whole"
    assert os.listdir(tmp_path) == ["song.wav"]
