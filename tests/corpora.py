"""Fetch the peers' migration corpora the corpus tests run through our migrate: `python -m tests.corpora DIR`.

django-migration-linter's test apps (`tests/test_project/app_*`, Apache-2.0) ship in its PyPI sdist 4.1.0
only (later sdists dropped the tests): `pip download` fetches that pinned sdist, its sha256 is checked, and
only the apps and the licence are unpacked into DIR/django-migration-linter/. Nothing is installed.
django-pg-zero-downtime-migrations' apps are in no sdist; tests/db/corpora/zerodowntime re-writes its cases.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

REQUIREMENT = "django-migration-linter==4.1.0"
SHA256 = "418f5ecee833576b79da213e4fc11f56f36e65ea190b7e62a3d8217c487b7635"
LINTER = "django-migration-linter"


def linter_apps(root: Path) -> Path:
    """Where the linter's apps are unpacked under `root` (each app_* a package importable from there)."""
    return root / LINTER


def _linter_file(inner: Path) -> Path | None:
    """Where a file of the sdist goes: its tests/test_project/app_* and LICENSE, nothing else."""
    if inner == Path("LICENSE"):
        return inner
    if inner.parts[:2] == ("tests", "test_project") and len(inner.parts) > 3 and inner.parts[2].startswith("app_"):
        return Path(*inner.parts[2:])
    return None


def fetch_sdist(requirement: str, sha256: str, partial: Path, place: Callable[[Path], Path | None]) -> Path:
    """`pip download` the pinned sdist, check its sha256, and unpack into `partial` (replaced) each file that
    `place` gives a path (relative to `partial`) for; returns `partial`."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, requirement], check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != sha256:
            raise SystemExit(f"{sdist.name}: sha256 {digest}, expected {sha256}; not unpacked")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                relative = place(Path(*parts[1:])) if member.isfile() and len(parts) > 1 else None
                if relative is None:
                    continue
                source = archive.extractfile(member)
                assert source is not None
                target = partial / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
    return partial


def fetch(root: Path) -> Path:
    """DIR/django-migration-linter, fetched once and checked against the pinned sha256."""
    dest = linter_apps(root)
    if (dest / "LICENSE").is_file():
        return dest
    fetch_sdist(REQUIREMENT, SHA256, root / f".{LINTER}.partial", _linter_file).rename(dest)
    return dest


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".corpora")
    root.mkdir(parents=True, exist_ok=True)
    print(f"{LINTER}: {fetch(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
