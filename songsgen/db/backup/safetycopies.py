"""The safety copies `dbrestore` takes: their names, and the ones a killed restore left behind.

Nothing else would mention a leftover as large as the database, so dbcheck and dbrestore name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

INFIX = ".pre-restore-"
REMOVE_COMMAND = "manage.py dbrestore --discard-safety-copies"


@dataclass(frozen=True)
class Leftover:
    path: Path
    size: int

    def __str__(self) -> str:
        return f"{self.path.name} ({self.size / 2**20:,.1f} MiB)"


def new_path(live: Path, moment: datetime | None = None) -> Path:
    """Where a restore starting now keeps its safety copy of `live`."""
    return live.with_name(f"{live.name}{INFIX}{(moment or datetime.now(UTC)):%Y%m%dT%H%M%SZ}")


def leftovers(live: Path, *, besides: Path | None = None) -> list[Leftover]:
    """Safety copies of `live` that exist now, oldest first, but `besides` (the running one)."""
    found = []
    for path in sorted(live.parent.glob(f"{live.name}{INFIX}*")):
        if path == besides or not path.is_file():
            continue
        try:
            found.append(Leftover(path, path.stat().st_size))
        except FileNotFoundError:  # removed meanwhile
            continue
    return found


def summary(found: list[Leftover]) -> str:
    """One sentence naming the leftovers and how to remove them."""
    total = sum(item.size for item in found) / 2**20
    return (f"{len(found)} safety cop{'y' if len(found) == 1 else 'ies'} left by earlier restores that did not "
            f"finish ({total:,.1f} MiB): {', '.join(str(item) for item in found)}; once you no longer need "
            f"them, remove them with `{REMOVE_COMMAND}`")
