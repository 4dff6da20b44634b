"""Listening to a song: the song's page has a player, and runserver serves the audio in DEBUG."""

from __future__ import annotations

import urllib.error
import urllib.request
import wave
from pathlib import Path

import pytest
from django.urls import reverse

from queueing.generators import LocalWavGenerator
from songs.demo_audio import write_demo_audio
from tests.devserver import dev_server
from tests.factories import make_song, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def media_root(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def admin_client(client):
    client.force_login(make_user(username="boss", is_staff=True, is_superuser=True))
    return client


def generated(song):
    """The song as the worker leaves it: a real WAV from the offline generator, the song completed."""
    result = LocalWavGenerator().generate(song)
    song.mark_generating()
    song.mark_completed(audio_file_path=result.audio_path, generation_time=0.1)
    return song, result.audio_path


def test_song_page_has_an_audio_player_for_its_file(admin_client, media_root):
    song, path = generated(make_song(title="Listen To Me"))
    body = admin_client.get(reverse("admin:songs_song_change", args=[song.pk])).content.decode()
    assert f'<audio controls preload="metadata" src="/media/{path}"></audio>' in body


def test_song_page_says_why_there_is_no_player(admin_client, media_root):
    pending = make_song()
    body = admin_client.get(reverse("admin:songs_song_change", args=[pending.pk])).content.decode()
    assert "No audio yet." in body and "<audio" not in body

    lost = make_song()
    lost.mark_generating()
    lost.mark_completed(audio_file_path="songs/gone.wav", generation_time=1.0)
    body = admin_client.get(reverse("admin:songs_song_change", args=[lost.pk])).content.decode()
    assert "The audio file songs/gone.wav is missing from the media folder." in body and "<audio" not in body


def test_media_is_not_served_by_django_without_debug(admin_client, media_root):
    song, path = generated(make_song())
    assert admin_client.get(f"/media/{path}").status_code == 404  # the web server's job in production


@pytest.mark.django_db(transaction=True)
def test_runserver_in_debug_serves_the_audio(subprocess_env, tmp_path, media_root):
    """`make run`'s server (DEBUG on) answers the player's request with the WAV itself."""
    media = media_root  # tmp_path/media: the server's media folder under SONGSGEN_DATA_DIR=tmp_path
    env = {**subprocess_env, "SONGSGEN_DATA_DIR": str(tmp_path)}
    write_demo_audio(("jazz",))
    expected = (media / "demo" / "jazz.wav").read_bytes()
    with dev_server(env) as url:
        with urllib.request.urlopen(f"{url}/media/demo/jazz.wav", timeout=10) as response:
            assert response.headers["Content-Type"] in {"audio/x-wav", "audio/wav"}
            body = response.read()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/media/demo/none.wav", timeout=10)
        with pytest.raises(urllib.error.HTTPError) as escaping:
            urllib.request.urlopen(f"{url}/media/..%2f..%2fmanage.py", timeout=10)
    assert body == expected
    with wave.open(str(media / "demo" / "jazz.wav")) as audio:
        assert audio.getnframes() > 0
    assert missing.value.code == 404
    assert escaping.value.code in {400, 404}  # SuspiciousFileOperation or not found: never the file
