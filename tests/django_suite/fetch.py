"""Fetch Django's own test suite for `make django-suite`: `python -m tests.django_suite.fetch DIR`.

The sdist of the Django that requirements.txt pins ships its `tests/` (runtests.py and every
suite); `pip download` fetches it, its sha256 is checked, and only `tests/` and the licence are
unpacked into DIR/django-<version>/. Nothing is installed: the suite runs against the venv's Django."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from tests.corpora import fetch_sdist

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


def _suite_file(inner: Path) -> Path | None:
    """Where a file of the sdist goes: its tests/ and LICENSE, nothing else."""
    return inner if inner == Path("LICENSE") or inner.parts[0] == "tests" else None


def fetch(root: Path) -> Path:
    """DIR/django-<version>/tests, fetched once and checked against the pinned sha256."""
    if pinned_version() != VERSION:
        raise SystemExit(f"requirements.txt pins Django {pinned_version()}, tests/django_suite/fetch.py fetches "
                         f"{VERSION}: update VERSION and SHA256 there (pip download, then sha256sum)")
    dest = suite_dir(root)
    if (dest / "runtests.py").is_file():
        return dest
    partial = fetch_sdist(f"django=={VERSION}", SHA256, root / f".django-{VERSION}.partial", _suite_file)
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
