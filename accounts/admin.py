from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.db.models import ManyToManyField
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from accounts.models import User, UserEvent


class KeyedMultipleChoiceField(forms.ModelMultipleChoiceField):
    """A choice that is no valid key (past the integer range, not a number) is an invalid
    choice, not a query the driver cannot send (SQLite's OverflowError)."""

    def clean(self, value: Any) -> Any:
        assert self.queryset is not None  # the admin gives the relation's queryset
        meta = self.queryset.model._meta
        key = meta.pk if self.to_field_name in (None, "pk") else meta.get_field(self.to_field_name)
        for choice in value if isinstance(value, list | tuple) else ():
            try:
                key.clean(choice, None)
            except ValidationError:
                raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice",
                                      params={"value": choice}) from None
        return super().clean(value)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user admin, with our timestamps in place of date_joined."""

    fieldsets = (
        (None, {"fields": ("username", "password")}),
        (_("Personal info"), {"fields": ("first_name", "last_name", "email")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Important dates"), {"fields": ("last_login", "created_at", "updated_at")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),
    )
    readonly_fields = ("last_login", "created_at", "updated_at")
    list_display = ("username", "email", "is_active", "is_staff", "created_at")
    list_filter = ("is_active", "is_staff", "is_superuser")
    search_fields = ("username", "email")
    # Newest first, served by the primary key whatever the filter.
    ordering = ("-id",)
    show_full_result_count = False

    def formfield_for_manytomany(
        self, db_field: ManyToManyField[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelMultipleChoiceField | None:
        return super().formfield_for_manytomany(db_field, request, form_class=KeyedMultipleChoiceField, **kwargs)


@admin.register(UserEvent)
class UserEventAdmin(admin.ModelAdmin):
    """Analytics events: read-only, written by the application."""

    list_display = ("created_at", "user", "event_type")
    list_filter = ("event_type",)
    list_select_related = ("user",)
    ordering = ("-created_at",)
    raw_id_fields = ("user",)
    # No unfiltered COUNT(*) over an append-only table that grows without bound.
    show_full_result_count = False
    readonly_fields = ("user", "event_type", "event_data", "created_at")

    def has_add_permission(self, request):  # events come from the application, never typed in
        return False

    def has_change_permission(self, request, obj=None):
        return False
