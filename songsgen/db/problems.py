"""One shape for "what is wrong" (`Problem`): check findings, safety findings, unsound backups.

`line()` is its text and `as_dict()` its JSON (every JSON problem list; migrate's `findings[]` and
backupcheck's `errors` keep their older keys beside it, `"report_format": 2`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a note) that a check found."""

    # the check or rule: "schema", "integrity", "DROP_COLUMN", "squawk:<rule>", "quick_check"
    code: str
    subject: str  # what it is about: a table, a migration ("app.name"), a file
    detail: str  # what is wrong, one line
    blocking: bool = True  # an error: the command fails or refuses; False: a warning, a note
    fix: str = ""  # what to do about it, when the check knows
    # who judged, where several do: "songsgen", "django-migration-linter", "squawk"
    source: str = ""
    agreed: tuple[str, ...] = ()  # the codes of other judges that found the same thing

    @property
    def severity(self) -> str:
        return ERROR if self.blocking else WARNING

    def line(self) -> str:
        """The problem as one line of text, as dbcheck and migrate print it."""
        agreed = f" (also {', '.join(self.agreed)})" if self.agreed else ""
        return f"[{self.severity}] {self.code}: {self.subject}: {self.detail}{agreed}"

    def __str__(self) -> str:
        return self.line()

    def as_dict(self) -> dict[str, object]:
        """The problem as JSON: severity, check, subject, detail; fix, source, agreed if known."""
        data: dict[str, object] = {
            "severity": self.severity, "check": self.code, "subject": self.subject, "detail": self.detail,
        }
        if self.fix:
            data["fix"] = self.fix
        if self.source:
            data["source"] = self.source
        if self.agreed:
            data["agreed"] = list(self.agreed)
        return data


def summary(problems: Sequence[Problem], limit: int | None = 5) -> str:
    """The details of the first `limit` problems (None: all) as one clause, for an error message."""
    return "; ".join(p.detail for p in problems[:limit])
