"""The demo's audio: one short WAV per genre, played by every completed demo song of that genre."""

from __future__ import annotations

import hashlib
import wave

from django.utils.text import slugify

from queueing.generators import TEMPO, LocalWavGenerator, media_file, write_media_file
from songs.admin import GENRES

FOLDER = "demo"  # under MEDIA_ROOT


def demo_audio_path(genre: str) -> str:
    """The shared file of `genre`, relative to MEDIA_ROOT ("demo/rb.wav" for r&b)."""
    return f"{FOLDER}/{slugify(genre) or 'other'}.wav"


def write_demo_audio(genres: tuple[str, ...] = GENRES) -> int:
    """Render each genre's file unless it is there already; returns how many were written."""
    synth = LocalWavGenerator()
    written = 0
    for genre in genres:
        relative = demo_audio_path(genre)
        if media_file(relative).is_file():
            continue
        samples = synth.render(hashlib.sha256(genre.encode()).digest(), TEMPO.get(genre, 100))

        def write(path: str, samples: bytes = samples) -> None:
            with wave.open(path, "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(synth.sample_rate)
                out.writeframes(samples)

        write_media_file(relative, write)
        written += 1
    return written
