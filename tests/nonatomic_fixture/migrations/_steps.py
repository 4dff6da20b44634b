"""What the fixture's RunPython steps do, by environment: SONGSGEN_NA_FAIL=<migration> raises in that migration's
step; SONGSGEN_NA_HANG=<migration> writes SONGSGEN_NA_FLAG and sleeps 120 s there (to be killed).
SONGSGEN_NA_LOCK_DIR=<folder>: 0003's step marks each attempt there (attempt-1, attempt-2 …), waits on its first
for the test to hold a lock on the album table (the file `locked`), then reads that table."""

import os
import time
from pathlib import Path


def _read_locked_table(folder: Path, schema_editor) -> None:
    attempt = len(list(folder.glob("attempt-*"))) + 1
    (folder / f"attempt-{attempt}").write_text("")
    deadline = time.monotonic() + 60
    while attempt == 1 and not (folder / "locked").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    schema_editor.execute("SELECT COUNT(*) FROM nonatomic_fixture_album")


def step(name):
    def run(apps, schema_editor):
        if os.environ.get("SONGSGEN_NA_FAIL") == name:
            raise RuntimeError(f"injected failure in {name}")
        if os.environ.get("SONGSGEN_NA_HANG") == name:
            Path(os.environ["SONGSGEN_NA_FLAG"]).write_text(f"in {name}")
            time.sleep(120)
        if os.environ.get("SONGSGEN_NA_LOCK_DIR") and name == "0003":
            _read_locked_table(Path(os.environ["SONGSGEN_NA_LOCK_DIR"]), schema_editor)

    return run
