"""`manage.py pgupgrade --from URL --to URL [--cutover]`: a new major by logical replication."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from songsgen.cli import non_negative_float, poll_seconds
from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import DatabaseBusy, DatabaseUnavailable, UpgradeError
from songsgen.db.move import Bouncer, Cutover, TableComparison, cut_over, mask_url, render, settings_for_url
from songsgen.db.move import pgupgrade as up
from songsgen.db.move import pgupgrade_leftovers as lo


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def _app_login() -> tuple[str, str] | None:
    """The user and password the application logs in with (DATABASE_URL), for PgBouncer's check."""
    db = settings.DATABASES["default"]
    if db.get("ENGINE") not in ("django.db.backends.postgresql", settings.POSTGRESQL_ENGINE):
        return None
    return str(db.get("USER") or ""), str(db.get("PASSWORD") or "")


class Command(BaseCommand):
    help = (
        "Upgrade to a new PostgreSQL major without downtime: the schema on the target from our migrations, then "
        "logical replication from the source (progress per table, then the lag). With --cutover it switches once "
        "the lag is below --max-lag: through PgBouncer (PAUSE, repoint, RESUME) or, without it, by making the "
        "source read-only; then proves the copy. Ctrl-C before the switch drops what it created on both sides; "
        "each run first removes what a killed one left, and --cleanup --from does that on its own. "
        "See docs/postgres.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="source", required=True, metavar="URL",
                            help="The database on the old server (wal_level=logical).")
        parser.add_argument("--to", dest="target", metavar="URL",
                            help="An empty database on the new server (with --cleanup: an abandoned target's URL, "
                                 "when its password differs from the source's).")
        parser.add_argument("--cleanup", action="store_true",
                            help="Only remove what interrupted runs left (slots, publications, their records on the "
                                 "source; their subscriptions on the targets it can reach), and say what.")
        parser.add_argument("--cutover", action="store_true", help="Switch to the target once the lag is small.")
        parser.add_argument("--max-lag", type=non_negative_float, default=1.0, metavar="SECONDS",
                            help="Cut over once the replication lag is below this (default 1 s).")
        parser.add_argument("--pgbouncer", metavar="ADMIN_URL",
                            help="PgBouncer's admin console (postgres://user:pw@host:6432/pgbouncer).")
        parser.add_argument("--pgbouncer-config", type=Path, metavar="PATH",
                            help="PgBouncer's ini file, whose [databases] entry is repointed to the target.")
        parser.add_argument("--pgbouncer-db", metavar="NAME",
                            help="The [databases] entry the application uses (default: the source's database name).")
        parser.add_argument("--pause-timeout", type=non_negative_float, default=5.0, metavar="SECONDS",
                            help="Give up the cutover (and resume the source) if the target has not caught up "
                                 "within this while writes are paused (default 5 s).")
        parser.add_argument("--interval", type=poll_seconds, default=1.0, metavar="SECONDS",
                            help="Seconds between progress and lag lines (default 1).")
        parser.add_argument("--finish", action="store_true",
                            help="After a cutover whose proof failed or was interrupted: drop the replication "
                                 "objects on both sides and keep all data.")
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print the report as JSON.")

    def handle(
        self, *args: Any, source: str, target: str | None, cleanup: bool, cutover: bool, max_lag: float,
        pgbouncer: str | None, pgbouncer_config: Path | None, pgbouncer_db: str | None, pause_timeout: float,
        interval: float, finish: bool, as_json: bool, verbosity: int, **options: Any,
    ) -> None:
        if cleanup:
            if cutover or finish:
                raise CommandError("--cleanup runs on its own: without --cutover or --finish.")
            self._cleanup(source, target)
            return
        if target is None:
            raise CommandError("Give --to (an empty database on the new server), or --cleanup to remove only what an "
                               "interrupted run left.")
        if bool(pgbouncer) != bool(pgbouncer_config):
            raise CommandError("Give --pgbouncer and --pgbouncer-config together (the admin console and its ini file).")
        if pgbouncer_config is not None and not pgbouncer_config.is_file():
            raise CommandError(f"PgBouncer's config {pgbouncer_config} does not exist.")
        self.verbosity = verbosity
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            src, dst = up.open_sides(source, target)
            with up.run_lock(src) as alone:
                if not alone:
                    self._ask_for_cutover(src, cutover=cutover, interval=interval)
                    return
                bouncer = None
                if pgbouncer and pgbouncer_config is not None:
                    bouncer = Bouncer(pgbouncer, pgbouncer_config, pgbouncer_db or src.dbname, _app_login())
                    bouncer.check(dst)
                if self._switched_before(src, dst, finish=finish):
                    return
                # The source's migrate lock: a schema change there would break
                # the replication meanwhile.
                with database_lock(settings_for_url(src.url), purpose="pgupgrade"):
                    self._check(src, dst, bouncer)
                    result = self._replicate(src, dst, bouncer, cutover=cutover, max_lag=max_lag,
                                             timeout=pause_timeout, interval=interval)
        except (UpgradeError, DatabaseUnavailable, DatabaseBusy) as exc:
            raise CommandError(str(exc)) from exc
        except psycopg.Error as exc:  # e.g. a role that may not create a publication
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"PostgreSQL refused a step of the upgrade: {first}") from exc
        except KeyboardInterrupt:
            # before anything was created (later ones are handled in _replicate)
            raise CommandError("Interrupted; nothing is left half-done: run pgupgrade again.") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._report(src, dst, result, as_json=as_json)

    def _say(self, line: str) -> None:
        if self.verbosity:
            self.stderr.write(line)
            self.stderr.flush()

    def _cleanup(self, source: str, target: str | None) -> None:
        """`--cleanup`: what abandoned runs left, removed and listed; refused while one is live."""
        try:
            src, _ = up.describe(source, "source")
            with up.run_lock(src) as alone:
                if not alone:
                    raise UpgradeError(
                        f"A pgupgrade is running from this source ({self._live(src)}): --cleanup removes only what "
                        "interrupted runs left. Let it finish, or stop it with Ctrl-C, then run --cleanup again."
                    )
                found = lo.survey(src, given=[u for u in (target, source) if u])
                if not found:
                    self.stdout.write(f"Nothing to remove: no pgupgrade left anything on {src.label}.")
                    return
                lo.remove(src, found, report=self.stdout.write)
        except (UpgradeError, DatabaseUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"PostgreSQL refused a step of the clean-up: {first}") from exc
        self.stdout.write(self.style.SUCCESS(f"Removed what interrupted pgupgrade runs left on {src.label}."))

    @staticmethod
    def _live(src: up.Side) -> str:
        """The live run as recorded (target, pid, host, its slot), for a refusal."""
        live = lo.records(src)
        return "; ".join(f"{r}, slot {r.run.slot}" for r in live) or "not replicating yet"

    def _ask_for_cutover(self, src: up.Side, *, cutover: bool, interval: float) -> None:
        """Another pgupgrade replicates this source: ask it to cut over (--cutover), else refuse."""
        if not cutover:
            raise UpgradeError(
                f"Another pgupgrade is already replicating this source ({self._live(src)}). Run `pgupgrade --cutover` "
                "with the same --from/--to to make it switch, or stop it with Ctrl-C."
            )
        up.request_cutover(src)
        self._say("pgupgrade: asked the running pgupgrade to cut over; waiting for it to finish")
        up.wait_for_lock(src, interval=interval)
        self.stdout.write("The running pgupgrade has finished: its output has the report.")

    def _switched_before(self, src: up.Side, dst: up.Side, *, finish: bool) -> bool:
        """An earlier run cut over to this target: never restart; `--finish` drops replication."""
        if not up.switched(dst):
            if finish:
                raise UpgradeError("Nothing to finish: no earlier pgupgrade cut over to this target.")
            return False
        if not finish:
            raise UpgradeError(
                "An earlier pgupgrade already cut over to this target (its proof failed or was interrupted), so "
                f"the application uses it now. Check it with `manage.py dbcompare --from {src.label} --to "
                f"{dst.label}`, then run pgupgrade --finish to drop the replication objects (all data is kept)."
            )
        for run in lo.runs_on_target(src, dst):
            lo.drop_replication(src, dst, run, empty_target=False)
        self.stdout.write("Dropped the publication, slot, subscription and marker tables; all data was kept.")
        return True

    def _check(self, src: up.Side, dst: up.Side, bouncer: Bouncer | None) -> None:
        """Every refusal first; then an earlier run's leftovers dropped. Nothing written before."""
        found = lo.survey(src, given=[dst.url, src.url], current=dst)
        on_target = lo.on_target(dst)
        up.check_source(src)
        self._migrated = up.check_target(dst, src, ours=on_target)
        if found or on_target:
            self._say("pgupgrade: dropping what an interrupted earlier run left on both sides")
            if bouncer is not None:  # it may have died with PgBouncer paused
                try:
                    bouncer.command(f"RESUME {bouncer.database}")
                except psycopg.Error:
                    pass  # not paused
            lo.remove(src, found, report=lambda line: self._say(f"pgupgrade: {line}"))
            if on_target:
                lo.clear_target(src, dst)

    def _replicate(
        self, src: up.Side, dst: up.Side, bouncer: Bouncer | None, *, cutover: bool, max_lag: float, timeout: float,
        interval: float,
    ) -> tuple[dict[str, int], float, Cutover | None]:
        """Set up, copy, follow the lag, cut over; all dropped again unless the switch happened."""
        switched = False
        run = up.Run.new(src)

        def committed() -> None:
            nonlocal switched
            switched = True
            lo.mark_switched(src, run)

        try:
            lo.record(src, run, dst)
            if not self._migrated:
                self._say(f"pgupgrade: migrating the target {dst.label} (PostgreSQL {dst.major})")
                up.migrate_target(dst)
            tables = up.start_replication(src, dst, run)
            lo.record_subscription(src, dst, run)
            up.enable_subscription(dst, run)
            self._say(f"pgupgrade: replicating {len(tables)} tables from PostgreSQL {src.major} to {dst.major} "
                      f"(run {run.id}: slot {run.slot})")
            totals, copy_seconds = up.wait_for_copy(src, dst, run, tables, report=self._say, interval=interval)
            self._say(f"pgupgrade: initial copy done in {copy_seconds:.1f}s; VACUUM on both sides")
            up.vacuum(src, dst, tables)
            while True:
                lag = up.lag(src, run.slot)
                self._say(f"pgupgrade: {lag}")
                if (cutover or up.cutover_requested(src)) and lag.seconds <= max_lag:
                    break
                time.sleep(interval)
            result = cut_over(src, dst, tables, slot=run.slot, bouncer=bouncer, timeout=timeout, report=self._say,
                              on_table=self._proved if self.verbosity > 1 else None, committed=committed)
        except KeyboardInterrupt:
            if switched:
                raise CommandError(
                    "Interrupted after the cutover: the application uses the target now; rerun "
                    f"`manage.py dbcompare --from {src.label} --to {dst.label}` for the proof."
                ) from None
            self._undo(src, dst, run)
            raise CommandError("Interrupted: the publication, subscription and copied rows were dropped on both "
                               "sides; the source is untouched.") from None
        except BaseException:
            if not switched:
                self._undo(src, dst, run)
            raise
        lo.drop_replication(src, dst, run, empty_target=False)
        with up.connect(dst, role="target") as conn:
            conn.execute("ANALYZE")
        return totals, copy_seconds, result

    def _undo(self, src: up.Side, dst: up.Side, run: up.Run) -> None:
        """Best effort: a failure here must not hide the error that brought us here."""
        self._say("pgupgrade: dropping the publication, subscription and copied rows")
        try:
            lo.release_source(src)
            lo.drop_replication(src, dst, run, empty_target=True)
        except Exception as exc:  # noqa: BLE001 — reported, and the next run drops the leftovers
            self._say(f"pgupgrade: could not clean up ({exc}); run pgupgrade again to drop the leftovers")

    def _proved(self, table: TableComparison) -> None:
        self._say(f"proved {table.table}: {'ok' if table.equal else table.describe()}")

    def _report(self, src: up.Side, dst: up.Side, result: tuple[dict[str, int], float, Cutover | None], *,
                as_json: bool) -> None:
        totals, copy_seconds, cut = result
        if cut is None:
            return
        report = {
            "source": src.label, "target": dst.label, "from_major": src.major, "to_major": dst.major,
            "mode": cut.mode, "initial_copy_seconds": round(copy_seconds, 3),
            "lag_at_cutover": {"bytes": cut.lag.bytes, "seconds": cut.lag.seconds},
            "writes_paused_ms": round(cut.paused * 1000, 1),
            "pause_steps_ms": {name: round(seconds * 1000, 1) for name, seconds in cut.steps.items()},
            "proof": "equal" if cut.comparison is not None and cut.comparison.equal else "differs",
            "rows": cut.rows,
        }
        if cut.mode == "read-only":
            report["database_url"] = mask_url(dst.url)
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        if cut.comparison is not None and self.verbosity:
            self.stdout.write("\n".join(render(cut.comparison)))
        self.stdout.write(self.style.SUCCESS(
            f"Upgraded PostgreSQL {src.major} -> {dst.major}: {sum(cut.rows.values()):,} rows in {len(cut.rows)} "
            f"tables, writes paused {cut.paused * 1000:.0f} ms, {cut.lag} at cutover, proof equal."
        ))
        if cut.mode == "read-only":
            self.stdout.write(f"The source is now read-only. Deploy DATABASE_URL={mask_url(dst.url)} (with its real "
                              "password) and restart the application.")
