"""Test data builders, in one place."""

from __future__ import annotations

import itertools

from accounts.models import User
from songs.models import Song
from songs.services import song_request

_seq = itertools.count(1)


def make_user(**fields) -> User:
    """A saved user with a unique username and email."""
    n = next(_seq)
    fields.setdefault("username", f"user{n}")
    fields.setdefault("email", f"user{n}@example.com")
    password = fields.pop("password", "pw-for-tests")
    return User.objects.create_user(password=password, **fields)


def make_song(*, user: User | None = None, **fields) -> Song:
    """A pending song with its queued job, made through the real service."""
    n = next(_seq)
    fields.setdefault("title", f"Song {n}")
    fields.setdefault("genre", "pop")
    return song_request(user=user or make_user(), **fields)
