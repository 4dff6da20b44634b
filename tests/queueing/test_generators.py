"""The generator interface and the offline WAV generator."""

from __future__ import annotations

import wave

import pytest

from queueing.generators import GenerationResult, LocalWavGenerator, check_media_path, get_generator, media_file
from tests.factories import make_song

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_local_generator_writes_a_playable_wav_under_the_media_root(settings):
    song = make_song(title="Rain on tin", genre="jazz", lyrics="drip drop")
    result = LocalWavGenerator().generate(song)
    assert isinstance(result, GenerationResult) and not result.audio_path.startswith("/")
    path = settings.MEDIA_ROOT / result.audio_path
    with wave.open(str(path), "rb") as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 16_000)
        assert audio.getnframes() / audio.getframerate() == pytest.approx(result.duration)
        frames = audio.readframes(audio.getnframes())
    assert max(frames) > 0  # not silence
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_local_generator_is_deterministic_and_follows_the_song(settings):
    song, other = make_song(title="Same"), make_song(title="Other")
    gen = LocalWavGenerator()
    first = (settings.MEDIA_ROOT / gen.generate(song).audio_path).read_bytes()
    again = (settings.MEDIA_ROOT / gen.generate(song).audio_path).read_bytes()
    assert first == again
    assert (settings.MEDIA_ROOT / gen.generate(other).audio_path).read_bytes() != first


def test_generator_comes_from_the_setting(settings):
    settings.SONGSGEN_GENERATOR = "tests.queueing.generators.FailingGenerator"
    assert type(get_generator()).__name__ == "FailingGenerator"
    settings.SONGSGEN_GENERATOR = "queueing.generators.NoSuchGenerator"
    with pytest.raises(ImportError):
        get_generator()


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x.wav", "songs/../../x.wav", "a\\b.wav"])
def test_paths_that_leave_the_media_root_are_refused(bad):
    with pytest.raises(ValueError, match="inside the media root"):
        check_media_path(bad)
    with pytest.raises(ValueError):
        media_file(bad)
