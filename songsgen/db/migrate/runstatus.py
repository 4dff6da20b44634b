"""How a guarded migrate ended: one name per outcome, the same string in its report, last-run record and /metrics."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A migrate run's `status`; each value is the string `--json`, the last-run record and /metrics carry."""

    PENDING = "pending"  # not finished: the report's value until the run ends
    OK = "ok"  # applied and verified
    NOTHING_TO_DO = "nothing-to-do"  # no migration to apply (Django's migrate still ran its post_migrate)
    SAFE = "safe"  # --check-safety: no unsafe operation
    REHEARSED = "rehearsed"  # rehearsed on a scratch copy; the live database was not touched
    REFUSED = "refused"  # stopped before anything changed, --check-safety's unsafe operations too (exit 2)
    RESTORED = "restored"  # failed; back at the migrations it had (rolled back or unapplied; exit 1)
    FAILED = "failed"  # failed and could NOT be brought all the way back (exit 3)
    RESUME_RESTORED = "resume-restored"  # --resume-restore unapplied what a killed run committed
    SNAPSHOT_RESTORED = "snapshot-restored"  # --resume-restore --from-snapshot put the snapshot back


# Runs that reached the live database, and which of them left it where the operator asked. Refusals changed
# nothing and leave no record; --check-safety and --rehearse-only are not migrates of the live database.
RECORDED = frozenset({RunStatus.OK, RunStatus.NOTHING_TO_DO, RunStatus.RESTORED, RunStatus.FAILED,
                      RunStatus.RESUME_RESTORED, RunStatus.SNAPSHOT_RESTORED})
SUCCESS = frozenset({RunStatus.OK, RunStatus.NOTHING_TO_DO, RunStatus.RESUME_RESTORED, RunStatus.SNAPSHOT_RESTORED})
