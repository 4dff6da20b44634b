"""The custom User, set as AUTH_USER_MODEL before the first migration."""

from __future__ import annotations

from typing import ClassVar

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from songsgen.db.functions import CodePointOrder


class UserManager(DjangoUserManager["User"]):
    """Django's manager, usable in migrations, with emails stored in one canonical case."""

    use_in_migrations = True

    def starting_with(self, prefix: str) -> models.QuerySet[User]:
        """Users whose username or email starts with `prefix`, any case: `theo` finds `Theodora`.

        A range on lower(column) in code-point order — [prefix, prefix with its last character incremented) —
        which the accounts_user_username_lower index and the email's unique index serve on both engines.
        """
        low = prefix.lower()
        if not low:
            return self.none()
        after = ord(low[-1]) + 1
        after = 0xE000 if 0xD800 <= after <= 0xDFFF else after  # a lone surrogate is no text either engine takes
        high = low[:-1] + chr(after) if after <= 0x10FFFF else None
        qs = self.alias(username_lower=CodePointOrder(Lower("username")), email_lower=CodePointOrder(Lower("email")))

        def starts(column: str) -> Q:
            return Q(**{f"{column}__gte": low}, **({f"{column}__lt": high} if high else {}))

        # The exact username too (its unique index): SQLite's lower() folds A-Z only, so "Émile" lowered here is
        # not lower("Émile") there. Emails need no such help: they are stored lower-cased by Python.
        return qs.filter(starts("username_lower") | starts("email_lower") | Q(username=prefix))

    @classmethod
    def normalize_email(cls, email: str | None) -> str:
        """Lower-case the whole address: email uniqueness is case-insensitive."""
        return (email or "").strip().lower()


class User(AbstractUser):
    """A person using the service; `email` is unique whatever its case."""

    email = models.EmailField("email address", help_text="Unique, compared case-insensitively.")
    # `created_at` replaces AbstractUser.date_joined so every table names its timestamps alike.
    date_joined = None  # type: ignore[assignment]
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects: ClassVar[UserManager] = UserManager()

    REQUIRED_FIELDS = ["email"]

    class Meta:
        verbose_name = "user"
        verbose_name_plural = "users"
        constraints = [
            # One account per email whatever its case; its index also serves the search by the start of an
            # email (code-point order, so a prefix is one range under any PostgreSQL collation).
            models.UniqueConstraint(CodePointOrder(Lower("email")), name="accounts_user_email_lower_uniq"),
        ]
        indexes = [
            # Active users by sign-up date: the admin's default listing and user analytics.
            models.Index(fields=["is_active", "created_at"], name="accounts_user_active_created"),
            # The song admin's search by the start of a username, any case (a range on lower(username)).
            models.Index(CodePointOrder(Lower("username")), name="accounts_user_username_lower"),
        ]

    def __str__(self) -> str:
        return self.username

    def clean(self) -> None:
        super().clean()
        self.email = type(self).objects.normalize_email(self.email)


class UserEvent(models.Model):
    """Something a user did, for analytics: a sign-in, a song request, a play…"""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="events", db_index=False)
    event_type = models.CharField(max_length=50)
    event_data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # A user's events, newest first; also serves every lookup by user (so
            # no separate FK index).
            models.Index(fields=["user", "created_at"], name="accounts_event_user_created"),
            # Events of one type over time: the analytics reports.
            models.Index(fields=["event_type", "created_at"], name="accounts_event_type_created"),
            # Everything in a time window, e.g. for retention.
            models.Index(fields=["created_at"], name="accounts_event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} by user {self.user_id} at {self.created_at:%Y-%m-%d %H:%M}"
