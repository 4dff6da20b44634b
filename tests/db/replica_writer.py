"""The application writing while Litestream replicates: `python -m tests.db.replica_writer OUT STOP [PAUSE]`.

Commits songs through `song_request` until the file STOP exists, pausing PAUSE seconds (default 0.01) between
commits, and appends `id<TAB>started<TAB>committed<TAB>waited` after each commit (wall-clock seconds, and
the commit's own duration), or `ERROR<TAB>message` for a failed one: the tests learn from it which commits
the application was told of, when, and how long it was held up.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(out: Path, stop: Path, pause: float) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from accounts.models import User
    from songs.services import song_request

    user, _ = User.objects.get_or_create(username="replica-writer", defaults={"email": "replica-writer@example.com"})
    with open(out, "a", buffering=1) as log:
        n = 0
        while not stop.exists():
            n += 1
            started, clock = time.time(), time.monotonic()
            try:
                song = song_request(user=user, title=f"replica {n}", genre="pop")
            except Exception as exc:  # noqa: BLE001 — the tests count these: there must be none
                log.write(f"ERROR\t{type(exc).__name__}: {exc}\n")
            else:
                waited = time.monotonic() - clock
                log.write(f"{song.pk}\t{started:.6f}\t{time.time():.6f}\t{waited:.4f}\n")
            time.sleep(pause)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.01)
