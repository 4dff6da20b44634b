"""`manage.py runworker`: work the generation queue (the loop lives in `queueing.worker`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.module_loading import import_string

from queueing.config import worker_config
from queueing.generation import GeneratorUnavailable
from queueing.models import GenerationQueue, song_model
from queueing.supervisor import Supervisor, worker_args
from queueing.worker import Worker
from songsgen.boundary import ExitCode
from songsgen.cli import poll_seconds, positive_int
from songsgen.db.exceptions import DatabaseNotReady
from songsgen.db.preflight import check_ready_for_writer, pending_note


def _silent(message: str) -> None:
    """The log at -v0."""


class Command(BaseCommand):
    help = (
        "Claim generation jobs (highest priority first, then oldest), generate their songs and record the "
        "outcome. Stops cleanly on SIGTERM/SIGINT: the job in hand is finished; a second signal exits at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=positive_int, default=1,
                            help="Worker processes to run, each with its own database connection (default 1).")
        parser.add_argument("--burst", action="store_true", help="Exit when no job is ready instead of waiting.")
        parser.add_argument("--max-jobs", type=positive_int, default=None,
                            help="Exit after this many jobs (per worker process).")
        parser.add_argument("--queue-poll", type=poll_seconds, default=1.0,
                            help="Seconds to wait before looking again at an empty queue (default 1).")
        parser.add_argument("--batch", type=positive_int, default=None,
                            help="Most jobs claimed in one statement (default: SONGSGEN_CLAIM_BATCH).")

    def handle(
        self, *args: Any, concurrency: int, burst: bool, max_jobs: int | None, queue_poll: float,
        batch: int | None, verbosity: int, **options: Any,
    ) -> None:
        # Before any worker starts: a supervisor would restart workers that fail at once.
        try:
            pending = check_ready_for_writer(connections[DEFAULT_DB_ALIAS],
                                             tables=[GenerationQueue._meta.db_table, song_model()._meta.db_table])
        except DatabaseNotReady as exc:
            raise CommandError(str(exc), returncode=ExitCode.REFUSED) from None
        if pending and verbosity >= 1:
            self.stderr.write(pending_note(pending))
        log: Callable[[str], None] = self.stdout.write if verbosity >= 1 else _silent
        # ImproperlyConfigured before any worker starts or any job is claimed
        worker_config(claim_batch=batch)
        if concurrency > 1:
            code = Supervisor(
                concurrency=concurrency, log=log,
                worker_args=worker_args(burst=burst, max_jobs=max_jobs, queue_poll=queue_poll, batch=batch,
                                        verbosity=verbosity),
            ).run()
            if code:
                raise CommandError("A worker process failed; see its output above.", returncode=code)
            return
        try:
            # made in the generator process; named here if it is wrong
            import_string(settings.SONGSGEN_GENERATOR)
        except ImportError as exc:
            raise CommandError(
                f"SONGSGEN_GENERATOR={settings.SONGSGEN_GENERATOR!r} cannot be imported ({exc}). Set it to the "
                "dotted path of a generator class, e.g. queueing.generators.LocalWavGenerator."
            ) from exc
        try:
            Worker(burst=burst, max_jobs=max_jobs, queue_poll=queue_poll, batch=batch, log=log).run()
        except GeneratorUnavailable as exc:
            raise CommandError(f"{exc}. Fix the generator or SONGSGEN_GENERATOR, then start the worker again.") from exc
