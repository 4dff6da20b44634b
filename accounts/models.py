"""The custom User, set as AUTH_USER_MODEL before the first migration."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


class UserManager(DjangoUserManager["User"]):
    """Django's manager, usable in migrations, with emails stored in one canonical case."""

    use_in_migrations = True

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

    objects = UserManager()

    REQUIRED_FIELDS = ["email"]

    class Meta:
        verbose_name = "user"
        verbose_name_plural = "users"
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_uniq"),
        ]
        indexes = [
            # Active users by sign-up date: the admin's default listing and user analytics.
            models.Index(fields=["is_active", "created_at"], name="accounts_user_active_created"),
        ]

    def __str__(self) -> str:
        return self.username

    def clean(self) -> None:
        super().clean()
        self.email = type(self).objects.normalize_email(self.email)
