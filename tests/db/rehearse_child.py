"""`python -m tests.db.rehearse_child SNAPSHOT PLAN_JSON`: rehearse a plan in a process of its own, print JSON.

Its own process so the rehearsal's child (songsgen/db/migrate/rehearse_child.py) inherits tests.settings_fixture.

Run with DJANGO_SETTINGS_MODULE=tests.settings_fixture so the test-only app tests/migrations_fixture is
installed here and nowhere else; the live database is the one DATABASE_URL names.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import django


def main() -> None:
    """Print the Rehearsal and the database aliases left afterwards as JSON (the report goes to stderr).

    With REHEARSE_TRACE=1 also the scratch connection's statements, "end" on the machine's monotonic clock,
    recorded in the rehearsal's process (tests/migrations_fixture/apps.py) into a file named here."""
    django.setup()
    from django.db import connection, connections

    from songsgen.db.migrate.rehearse import format_report, rehearse

    trace = None
    if os.environ.get("REHEARSE_TRACE"):
        fd, name = tempfile.mkstemp(prefix="rehearse-trace-", suffix=".jsonl")
        os.close(fd)
        trace = Path(name)
        os.environ["REHEARSE_TRACE"] = name  # the rehearsal's process inherits it
    keys = [(app, name, backwards) for app, name, backwards in json.loads(sys.argv[2])]
    result = rehearse(connection, Path(sys.argv[1]), keys, log=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(format_report(result)), file=sys.stderr)
    statements = []
    if trace is not None:
        statements = [json.loads(line) for line in trace.read_text().splitlines()]
        trace.unlink()
    print(json.dumps({"rehearsal": result.as_dict(), "aliases": sorted(connections.settings),
                      "statements": statements}))


if __name__ == "__main__":
    main()
