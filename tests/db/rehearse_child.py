"""`python -m tests.db.rehearse_child SNAPSHOT PLAN_JSON`: rehearse a plan in a process of its own, print JSON.

Its own process because pytest-django forbids connecting to an alias registered after the test started.

Run with DJANGO_SETTINGS_MODULE=tests.settings_fixture so the test-only app tests/migrations_fixture is
installed here and nowhere else; the live database is the one DATABASE_URL names.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import django


def main() -> None:
    """Print the Rehearsal and the database aliases left afterwards as JSON (the report goes to stderr)."""
    django.setup()
    from django.db import connection, connections

    from songsgen.db.rehearse import format_report, rehearse

    keys = [(app, name, backwards) for app, name, backwards in json.loads(sys.argv[2])]
    result = rehearse(connection, Path(sys.argv[1]), keys, log=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(format_report(result)), file=sys.stderr)
    print(json.dumps({"rehearsal": asdict(result), "aliases": sorted(connections.settings)}))


if __name__ == "__main__":
    main()
