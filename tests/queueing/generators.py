"""Generators for the worker tests and the benchmark, named by SONGSGEN_GENERATOR in worker processes.

They write no audio: what they record is how often each song was generated.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.db import connection

from queueing.generators import GenerationResult

EXECUTIONS_TABLE = "test_queue_executions"
# One row per execution; a second execution of a song breaks the UNIQUE constraint.
CREATE_EXECUTIONS = (
    f"CREATE TABLE IF NOT EXISTS {EXECUTIONS_TABLE} (song_id BIGINT NOT NULL UNIQUE, pid INTEGER NOT NULL)"
)


def _result(song: Any) -> GenerationResult:
    return GenerationResult(audio_path=f"songs/test/{song.pk}.wav", duration=1.0)


class NoopGenerator:
    """Does nothing; with SONGSGEN_TEST_EXEC_LOG set, appends each song id to that file (one line each)."""

    def __init__(self) -> None:
        path = os.environ.get("SONGSGEN_TEST_EXEC_LOG")
        self.log = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - open for the worker's life

    def generate(self, song: Any) -> GenerationResult:
        if self.log is not None:
            self.log.write(f"{song.pk}\n")
        return _result(song)


class RecordingGenerator:
    """Records each execution in EXECUTIONS_TABLE (autocommit: outside the worker's transactions)."""

    def generate(self, song: Any) -> GenerationResult:
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {EXECUTIONS_TABLE} (song_id, pid) VALUES (%s, %s)", [song.pk, os.getpid()])
        return _result(song)


class SlowGenerator(RecordingGenerator):
    """Takes SONGSGEN_TEST_SLOW_SECONDS (default 3) per song, then records the execution."""

    def generate(self, song: Any) -> GenerationResult:
        time.sleep(float(os.environ.get("SONGSGEN_TEST_SLOW_SECONDS", "3")))
        return super().generate(song)


class FailingGenerator:
    """Always fails, as a generator whose backend is down."""

    def generate(self, song: Any) -> GenerationResult:
        raise RuntimeError(f"the generator is down (song {song.pk})")


class ScriptedGenerator:
    """Does what the song's title says, to show how the worker copes; any other title is quick.

    "hang": never returns. "keyboard-interrupt", "system-exit": raise them. "crash": ends its process.
    "interrupt-later": raise
    KeyboardInterrupt after SONGSGEN_TEST_SLOW_SECONDS. "long-path", "long-id": return a 5,010-character
    audio path or external id.
    """

    def generate(self, song: Any) -> GenerationResult:
        if song.title == "hang":
            while True:
                time.sleep(3600)
        if song.title == "keyboard-interrupt":
            raise KeyboardInterrupt
        if song.title == "system-exit":
            raise SystemExit(3)
        if song.title == "crash":
            os._exit(7)  # as a segfault or the OOM killer would end it: no exception, no reply
        if song.title == "interrupt-later":
            time.sleep(float(os.environ.get("SONGSGEN_TEST_SLOW_SECONDS", "3")))
            raise KeyboardInterrupt
        if song.title == "long-path":
            return GenerationResult(audio_path="songs/" + "p" * 5000 + ".wav", duration=1.0)
        if song.title == "long-id":
            return GenerationResult(audio_path=f"songs/test/{song.pk}.wav", duration=1.0, external_id="x" * 5010)
        return _result(song)


class BrokenGenerator:
    """Cannot even be made: its constructor fails, as one missing its credentials."""

    def __init__(self) -> None:
        raise RuntimeError("SUNO_API_KEY is not set")

    def generate(self, song: Any) -> GenerationResult:
        raise AssertionError("never made")
