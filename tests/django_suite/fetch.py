"""Fetch Django's own test suite for `make django-suite`: `python -m tests.django_suite.fetch DIR`.

The sdist of the Django that requirements.txt pins ships its `tests/` (runtests.py and every
suite); `pip download` fetches it, its sha256 is checked, and only `tests/` and the licence are
unpacked into DIR/django-<version>/. Nothing is installed: the suite runs against the venv's Django."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "5.2.19"
SHA256 = "ad03d8abc51dbff95ebf34b27123cf0c26a3b62db7ba0cd520783686362533d1"
REPO = Path(__file__).resolve().parents[2]


def pinned_version() -> str:
    """The Django version requirements.txt pins (`Django==X`)."""
    text = (REPO / "requirements.txt").read_text()
    match = re.search(r"^django==(\S+)", text, re.I | re.M)
    if match is None:
        raise SystemExit("requirements.txt pins no Django version")
    return match[1]


def suite_dir(root: Path) -> Path:
    """Where Django's `tests/` (with runtests.py) is unpacked under `root`."""
    return root / f"django-{VERSION}" / "tests"


def unpack(sdist: Path, dest: Path) -> None:
    """The sdist's tests/ and LICENSE into dest, nothing else."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 2:
                continue
            inner = Path(*parts[1:])
            if inner != Path("LICENSE") and inner.parts[0] != "tests":
                continue
            source = archive.extractfile(member)
            assert source is not None
            target = dest / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)


def fetch(root: Path) -> Path:
    """DIR/django-<version>/tests, fetched once and checked against the pinned sha256."""
    if pinned_version() != VERSION:
        raise SystemExit(f"requirements.txt pins Django {pinned_version()}, tests/django_suite/fetch.py fetches "
                         f"{VERSION}: update VERSION and SHA256 there (pip download, then sha256sum)")
    dest = suite_dir(root)
    if (dest / "runtests.py").is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "-d", tmp, f"django=={VERSION}"],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"{sdist.name}: sha256 {digest}, expected {SHA256}; not unpacked")
        partial = root / f".django-{VERSION}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        unpack(sdist, partial)
        shutil.rmtree(dest.parent, ignore_errors=True)
        partial.rename(dest.parent)
    return dest


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".corpora")
    root.mkdir(parents=True, exist_ok=True)
    print(f"Django {VERSION}'s test suite: {fetch(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
