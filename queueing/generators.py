"""The generator interface (`GenerationResult`), and the local generator that works offline.

A generator runs outside any transaction: it raises to fail, and never touches the job or status.
"""

from __future__ import annotations

import array
import hashlib
import math
import random
import sys
import wave
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from songsgen.db.atomicfile import replaced_when_complete


@dataclass(frozen=True)
class GenerationResult:
    """What a generator made: the audio file (relative to MEDIA_ROOT), its length, external id."""

    audio_path: str
    duration: float
    external_id: str | None = None


class Generator(Protocol):
    """Anything with `generate(song) -> GenerationResult`."""

    def generate(self, song: Any) -> GenerationResult: ...


def get_generator(path: str | None = None) -> Generator:
    """Instantiate the generator class named by `path` or settings.SONGSGEN_GENERATOR."""
    return import_string(path or settings.SONGSGEN_GENERATOR)()


def check_media_path(relative: str) -> str:
    """Refuse a path that is not plain and relative under the media root (`/`, `..`, backslash)."""
    parts = PurePosixPath(relative).parts
    if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/") or ".." in parts:
        raise ValueError(f"{relative!r} is not a file path inside the media root.")
    return relative


# Where the worker stores each part of a result: the song's fields mark_completed() writes.
RESULT_FIELDS = {"audio_path": "audio_file_path", "external_id": "suno_song_id"}


def check_result(song: Any, result: object) -> GenerationResult:
    """Refuse a result the song's fields would not store as given (type, length, media path).

    Checked by the fields' own validation before the finishing transaction: SQLite does not enforce
    a column's length, and PostgreSQL would refuse the row only inside it.
    """
    if not isinstance(result, GenerationResult):
        raise TypeError(f"generate() returned {result!r:.200}, not a GenerationResult.")
    for attr, name in RESULT_FIELDS.items():
        value = getattr(result, attr)
        if value is None and attr == "external_id":
            continue
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError(f"GenerationResult.{attr} must be text without NUL characters, got {value!r:.80}.")
        field = song._meta.get_field(name)
        try:
            field.clean(value, song)
        except ValidationError as exc:
            raise ValueError(f"GenerationResult.{attr} {value!r:.80} does not fit "
                             f"{song._meta.object_name}.{name}: {' '.join(exc.messages)}") from None
    check_media_path(result.audio_path)  # a path that would leave the media root fails the attempt
    return result


def media_file(relative: str) -> Path:
    """The absolute path of `relative` under MEDIA_ROOT; refuses a path that would leave it."""
    check_media_path(relative)
    root = Path(settings.MEDIA_ROOT).resolve()
    target = (root / relative).resolve()
    if Path(relative).is_absolute() or not target.is_relative_to(root) or target == root:
        raise ValueError(f"{relative!r} is not a file path inside the media root.")
    return target


def write_media_file(relative: str, write: Any) -> Path:
    """Write a file under MEDIA_ROOT atomically: `write(tmp_path)` fills a temporary, renamed."""
    target = media_file(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Readers see the old file or the whole new one, never half.
    with replaced_when_complete(target, suffix=".tmp", mode=0o644, durable=False) as tmp:
        write(str(tmp))
    return target


# Beats per minute by genre; anything else gets a moderate tempo.
TEMPO = {"ambient": 60, "blues": 80, "classical": 72, "country": 100, "electronic": 128, "folk": 90,
         "funk": 110, "hip-hop": 92, "jazz": 120, "latin": 105, "metal": 150, "pop": 116, "punk": 170,
         "r&b": 84, "reggae": 76, "rock": 132, "soul": 88}
PENTATONIC = (0, 2, 4, 7, 9)  # semitones above the root: any sequence of these sounds consonant


class LocalWavGenerator:
    """Renders a short melody as a playable WAV from the song's fields, offline, deterministic.

    The same song (id, title, genre, prompt, lyrics) always gives the same bytes: the fields seed
    the melody, and nothing else (no clock, no global random state) goes in.
    """

    sample_rate = 16_000
    seconds = 6.0

    def generate(self, song: Any) -> GenerationResult:
        seed = hashlib.sha256(
            "\x1f".join([str(song.pk), song.title, song.genre, song.style_prompt, song.lyrics]).encode()
        ).digest()
        samples = self.render(seed, TEMPO.get(song.genre, 100))
        relative = f"songs/{song.pk // 1000:06d}/{song.pk}.wav"

        def write(path: str) -> None:
            with wave.open(path, "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(self.sample_rate)
                out.writeframes(samples)

        write_media_file(relative, write)
        return GenerationResult(audio_path=relative, duration=self.seconds)

    def render(self, seed: bytes, bpm: int) -> bytes:
        """16-bit mono PCM: one pentatonic note per beat, with a short fade at each note's ends."""
        rng = random.Random(seed)
        rate = self.sample_rate
        root = 220.0 * 2 ** (rng.randrange(12) / 12)
        beat = max(1, int(rate * 60 / bpm))
        total = int(rate * self.seconds)
        pcm = array.array("h", bytes(2 * total))
        fade = max(1, beat // 10)
        for start in range(0, total, beat):
            octave = rng.choice((0, 0, 12))
            freq = root * 2 ** ((rng.choice(PENTATONIC) + octave) / 12)
            step = 2 * math.pi * freq / rate
            length = min(beat, total - start)
            for i in range(length):
                envelope = min(1.0, i / fade, (length - i) / fade)
                pcm[start + i] = int(12_000 * envelope * math.sin(step * i))
        if sys.byteorder != "little":  # WAV is little-endian
            pcm.byteswap()
        return pcm.tobytes()

