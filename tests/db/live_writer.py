"""A stand-in for the running application: `python -m tests.db.live_writer OUT STOP` commits songs through
`song_request` until the file STOP exists, appending `id<TAB>title<TAB>seconds waited` to OUT after each
commit (and `ERROR<TAB>message` for a failed one), so a test can check afterwards that nothing it was told
was committed went missing or had its id handed to another song."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path


def main(out: Path, stop: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from accounts.models import User
    from songs.services import song_request

    user = User.objects.get(username=os.environ.get("SONGSGEN_WRITER_USER", "live-writer"))
    tag = uuid.uuid4().hex[:8]
    with open(out, "a", buffering=1) as log:
        n = 0
        while not stop.exists():
            n += 1
            title = f"live {tag} {n}"
            started = time.monotonic()
            try:
                song = song_request(user=user, title=title, genre="pop")
            except Exception as exc:  # noqa: BLE001 — the test counts these: there must be none
                log.write(f"ERROR\t{type(exc).__name__}: {exc}\n")
            else:
                log.write(f"{song.pk}\t{title}\t{time.monotonic() - started:.3f}\n")
            time.sleep(0.02)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
