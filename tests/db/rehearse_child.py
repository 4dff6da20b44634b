"""`python -m tests.db.rehearse_child SNAPSHOT PLAN_JSON`: rehearse a plan in a process of its own, print JSON.

Its own process because pytest-django forbids connecting to an alias registered after the test started.

Run with DJANGO_SETTINGS_MODULE=tests.settings_fixture so the test-only app tests/migrations_fixture is
installed here and nowhere else; the live database is the one DATABASE_URL names.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import django


def trace(statements: list[dict]) -> None:
    """Record every statement of the scratch connection: its SQL, when it ended, whether inside an atomic block."""
    from django.db.backends.signals import connection_created

    def wrapper(execute, sql, params, many, context):
        scratch = context["connection"]
        atomic = scratch.in_atomic_block
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append({"sql": sql, "end": time.monotonic(), "atomic": atomic})

    def install(sender, connection, **kwargs) -> None:
        if connection.alias != "default" and wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    connection_created.connect(install, weak=False)


def main() -> None:
    """Print the Rehearsal and the database aliases left afterwards as JSON (the report goes to stderr).

    With REHEARSE_TRACE=1 also the scratch connection's statements, "end" on the rehearsal's own clock."""
    django.setup()
    from django.db import connection, connections

    from songsgen.db.rehearse import format_report, rehearse

    statements: list[dict] = []
    if os.environ.get("REHEARSE_TRACE"):
        trace(statements)
    keys = [(app, name, backwards) for app, name, backwards in json.loads(sys.argv[2])]
    result = rehearse(connection, Path(sys.argv[1]), keys, log=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(format_report(result)), file=sys.stderr)
    print(json.dumps({"rehearsal": result.as_dict(), "aliases": sorted(connections.settings),
                      "statements": statements}))


if __name__ == "__main__":
    main()
