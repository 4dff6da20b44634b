import json
import os
import time

from django.apps import AppConfig


def _trace_into(path: str) -> None:
    """Append every statement of this process's connections to `path`: its SQL, when it ended, whether inside
    an atomic block (the rehearsal's process, where `default` is the scratch copy)."""
    from django.db.backends.signals import connection_created

    def wrapper(execute, sql, params, many, context):
        atomic = context["connection"].in_atomic_block
        try:
            return execute(sql, params, many, context)
        finally:
            with open(path, "a") as out:
                out.write(json.dumps({"sql": sql, "end": time.monotonic(), "atomic": atomic}) + "\n")

    def install(sender, connection, **kwargs) -> None:
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    connection_created.connect(install, weak=False)


class MigrationsFixtureConfig(AppConfig):
    """A test-only app whose migrations fail on demand (SONGSGEN_FIXTURE_MODE); never installed in the project.

    REHEARSE_TRACE naming a file (tests/db/rehearse_child.py) traces the statements of the process."""

    name = "tests.migrations_fixture"
    label = "migrations_fixture"

    def ready(self) -> None:
        trace = os.environ.get("REHEARSE_TRACE", "")
        if os.sep in trace:
            _trace_into(trace)
