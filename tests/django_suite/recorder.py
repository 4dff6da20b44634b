"""The test runner both runs of Django's suite use: Django's own, writing every test's outcome to a JSON file.

Parallel runs send each failure from the worker process to the parent pickled; without tblib a
traceback cannot be pickled and Django's runner gives up. The workers here send the traceback as
text instead, so `--parallel` works with only the project's requirements installed."""

from __future__ import annotations

import json
import os
import traceback
import unittest
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from django.test.runner import DiscoverRunner, ParallelTestSuite, RemoteTestResult, RemoteTestRunner

RESULTS_ENV = "DJANGO_SUITE_RESULTS"
REBUILDS_ENV = "DJANGO_SUITE_REBUILDS"  # a file: one line per table rebuild our schema editor was asked for
# Worst first: a test with a failed subtest and no error is a failure.
RANK = {"error": 0, "failure": 1, "unexpected-success": 2, "pass": 3, "expected-failure": 4, "skip": 5}

ExcInfo = tuple[Any, Any, Any]


class RemoteError(Exception):
    """An exception raised in a worker process, carried to the parent as its formatted traceback."""


def as_text(err: ExcInfo) -> ExcInfo:
    """The exception with its traceback as text: picklable whatever it holds."""
    if isinstance(err[1], RemoteError):
        return err
    text = "".join(traceback.format_exception(err[0], err[1], err[2])).rstrip()
    return RemoteError, RemoteError(text), None


class TextErrorsResult(RemoteTestResult):
    """A worker's result whose errors travel as text."""

    def addError(self, test: Any, err: ExcInfo) -> None:  # noqa: N802 - unittest's names
        super().addError(test, as_text(err))

    def addFailure(self, test: Any, err: ExcInfo) -> None:  # noqa: N802
        super().addFailure(test, as_text(err))

    def addSubTest(self, test: Any, subtest: Any, err: ExcInfo | None) -> None:  # noqa: N802
        super().addSubTest(test, subtest, None if err is None else as_text(err))

    def addExpectedFailure(self, test: Any, err: ExcInfo) -> None:  # noqa: N802
        super().addExpectedFailure(test, as_text(err))


class TextErrorsRunner(RemoteTestRunner):
    resultclass = TextErrorsResult


class TextErrorsSuite(ParallelTestSuite):
    runner_class = TextErrorsRunner


def message(err: ExcInfo) -> str:
    """The traceback's text (the worker's own when it came from one)."""
    if isinstance(err[1], RemoteError):
        return str(err[1])
    return "".join(traceback.format_exception(err[0], err[1], err[2])).rstrip()


class RecordingResult(unittest.TextTestResult):
    """unittest's text result that also keeps each test's worst outcome and its traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, str]] = {}

    def note(self, test: Any, outcome: str, detail: str = "") -> None:
        key = test.id()
        before = self.outcomes.get(key)
        if before is None or RANK[outcome] < RANK[before["outcome"]]:
            self.outcomes[key] = {"outcome": outcome, "detail": detail}

    def addSuccess(self, test: Any) -> None:  # noqa: N802
        super().addSuccess(test)
        self.note(test, "pass")

    def addError(self, test: Any, err: ExcInfo) -> None:  # noqa: N802
        super().addError(test, err)
        self.note(test, "error", message(err))

    def addFailure(self, test: Any, err: ExcInfo) -> None:  # noqa: N802
        super().addFailure(test, err)
        self.note(test, "failure", message(err))

    def addSubTest(self, test: Any, subtest: Any, err: ExcInfo | None) -> None:  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException) or (
                err[0] is RemoteError and f"\n{test.failureException.__name__}" in message(err))
            self.note(test, "failure" if failed else "error", f"{subtest}\n{message(err)}")

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        self.note(test, "skip", reason)

    def addExpectedFailure(self, test: Any, err: ExcInfo) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)
        self.note(test, "expected-failure")

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self.note(test, "unexpected-success")


class RecordingRunner(DiscoverRunner):
    """Django's runner; the outcomes go to the file named by $DJANGO_SUITE_RESULTS when the run ends."""

    parallel_test_suite = TextErrorsSuite

    def get_resultclass(self) -> Any:
        return RecordingResult

    def setup_test_environment(self, **kwargs: Any) -> None:
        super().setup_test_environment(**kwargs)
        self._rebuilds = ExitStack()
        if os.environ.get(REBUILDS_ENV):  # before the workers fork: they inherit it
            self._rebuilds.enter_context(count_rebuilds(Path(os.environ[REBUILDS_ENV])))

    def teardown_test_environment(self, **kwargs: Any) -> None:
        self._rebuilds.close()
        super().teardown_test_environment(**kwargs)

    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        result = super().run_suite(suite, **kwargs)
        target = os.environ.get(RESULTS_ENV)
        if target:
            Path(target).write_text(json.dumps(getattr(result, "outcomes", {}), indent=1, sort_keys=True))
        return result


def count_rebuilds(log: Path) -> Any:
    """While open, each rebuild our editor is asked for ("asked") and each it did online ("online", inline
    or committed) is a line in `log`: how much of the run judged the online way, not Django's."""
    from songsgen.db.migrate import observe
    from songsgen.db.migrate.online.editor import OnlineSchemaEditor
    from songsgen.db.migrate.online.rebuild import Stats

    def line(text: str) -> None:
        with log.open("a") as out:
            out.write(text + "\n")

    stock = OnlineSchemaEditor._remake_table

    def remake(editor: Any, model: Any, *args: Any, **kwargs: Any) -> None:
        line(f"asked {model._meta.db_table}")
        stock(editor, model, *args, **kwargs)

    def done(stats: Stats) -> None:
        line(f"online {stats.table} {'inline' if stats.inline else 'committed'}")

    stack = ExitStack()
    OnlineSchemaEditor._remake_table = remake  # type: ignore[method-assign,assignment]
    stack.callback(setattr, OnlineSchemaEditor, "_remake_table", stock)
    stack.enter_context(observe.listening(done))
    return stack
