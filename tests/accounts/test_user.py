from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from accounts.models import User
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_custom_user_is_auth_user_model():
    assert get_user_model() is User


def test_email_unique_case_insensitively_in_database():
    make_user(username="a", email="Ann@Example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        # bypass normalisation: the database's Lower(email) constraint must refuse it
        User.objects.bulk_create([User(username="b", email="ANN@example.COM")])


def test_email_normalised_and_password_hashed():
    user = make_user(username="c", email="  Cee@EXAMPLE.com ", password="s3cret-pass")
    assert user.email == "cee@example.com"
    assert user.password != "s3cret-pass" and user.check_password("s3cret-pass")
    assert user.created_at and user.updated_at
    assert str(user) == "c"


def test_username_unique():
    make_user(username="d")
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.bulk_create([User(username="d", email="other@example.com")])


@pytest.mark.django_db
def test_user_events_cascade_with_their_user():
    from accounts.models import UserEvent
    from tests.factories import make_user

    user = make_user()
    event = UserEvent.objects.create(user=user, event_type="song_requested", event_data={"song": 1})
    assert "song_requested by user" in str(event)
    user.delete()
    assert not UserEvent.objects.filter(pk=event.pk).exists()
