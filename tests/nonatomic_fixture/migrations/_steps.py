"""What the fixture's RunPython steps do, by environment: SONGSGEN_NA_FAIL=<migration> raises in that migration's
step; SONGSGEN_NA_HANG=<migration> writes SONGSGEN_NA_FLAG and sleeps 120 s there (to be killed)."""

import os
import time
from pathlib import Path


def step(name):
    def run(apps, schema_editor):
        if os.environ.get("SONGSGEN_NA_FAIL") == name:
            raise RuntimeError(f"injected failure in {name}")
        if os.environ.get("SONGSGEN_NA_HANG") == name:
            Path(os.environ["SONGSGEN_NA_FLAG"]).write_text(f"in {name}")
            time.sleep(120)

    return run
