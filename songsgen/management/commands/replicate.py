"""`manage.py replicate`: stream the SQLite database's WAL to its replica with Litestream.

Takes the replicate lock and becomes Litestream, in the foreground (see docs/backups.md).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from songsgen.db.backup import litestream, replica
from songsgen.db.exceptions import ReplicaError


class Command(BaseCommand):
    help = ("Replicate the SQLite database continuously with Litestream (foreground; SIGTERM or Ctrl-C stops it). "
            "SONGSGEN_REPLICA_URL picks the replica. See docs/backups.md.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-d", "--database", default="default", help="Database alias (default: default).")
        parser.add_argument("--print-config", action="store_true",
                            help="Print the Litestream configuration this would run, and exit.")

    def handle(self, *, database: str, print_config: bool, verbosity: int, **options: Any) -> None:
        if database not in connections:
            raise CommandError(f"Database {database} does not exist.")
        try:
            rep = replica.replication(connections[database].settings_dict)
            if print_config:
                self.stdout.write(json.dumps(litestream.config(rep), indent=2))
                return
            litestream.binary()
            if not rep.database.exists():
                raise ReplicaError(f"there is no database at {rep.database}: run `manage.py migrate` first.")
            litestream.prepare(rep)
            lock = replica.take_lock(rep)
        except ReplicaError as exc:
            raise CommandError(f"Replication refused: {exc}") from exc
        except OSError as exc:
            raise CommandError(f"Replication refused: {exc}.") from exc
        if verbosity >= 1:
            self.stdout.write(f"Replicating {rep.database} to {rep.shown_url} every {rep.sync_interval:g} s "
                              f"(pid {os.getpid()}); SIGTERM or Ctrl-C stops. Litestream logs to {rep.log} "
                              "(its warnings and errors here too).")
            self.stdout.flush()
        for conn in connections.all(initialized_only=True):
            conn.close()
        try:
            litestream.exec_replicate(rep, lock)
        except OSError as exc:  # the binary could not be started at all
            raise CommandError(f"Replication failed to start Litestream: {exc}.") from exc
