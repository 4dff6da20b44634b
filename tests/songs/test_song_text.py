"""Text neither database can store (a lone surrogate, as JSON's "\\ud800" decodes to) is a ValidationError
on the field, from song_request and from a form on Song, never a UnicodeEncodeError from the driver."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.forms import modelform_factory

from queueing.models import GenerationQueue
from songs.models import Song
from songs.services import song_request
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("field", "text", "shown"), [
    ("title", "\ud800", "U+D800 at position 1"),
    ("title", "Love \udfff song", "U+DFFF at position 6"),
    ("lyrics", "la la \udc80", "U+DC80 at position 7"),
], ids=["title-alone", "title-inside", "lyrics"])
def test_song_request_refuses_a_lone_surrogate_and_writes_nothing(field, text, shown):
    user = make_user()
    request = {"title": "A song", "genre": "pop", field: text}
    with pytest.raises(ValidationError) as caught:
        song_request(user=user, **request)
    [message] = caught.value.message_dict[field]
    assert shown in message and "not valid text on its own" in message
    assert not Song.objects.exists() and not GenerationQueue.objects.exists()


def test_a_form_on_song_shows_the_lone_surrogate_as_a_field_error():
    form_class = modelform_factory(Song, fields=["user", "title", "genre", "style_prompt", "lyrics"])
    form = form_class(data={"user": make_user().pk, "title": "Bad \ud800 title", "genre": "pop"})
    assert not form.is_valid()
    assert list(form.errors) == ["title"]
    assert "U+D800" in form.errors["title"][0]
    assert not Song.objects.exists()
