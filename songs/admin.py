"""Browsing songs. Every choice here keeps a list page to a few indexed queries at 1M songs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.paginator import Page
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from queueing.models import GenerationQueue
from songs.models import Song
from songsgen.db.pagination import CappedCountPaginator, LargeTableAdminMixin

# The genres the service offers. The filter lists these rather than asking the database for
# SELECT DISTINCT genre, which reads every row of the table.
GENRES = (
    "ambient", "blues", "classical", "country", "electronic", "folk", "funk", "hip-hop",
    "jazz", "latin", "metal", "pop", "punk", "r&b", "reggae", "rock", "soul",
)


class GenreFilter(admin.SimpleListFilter):
    """Filter by genre from the catalogue above (never a full-table DISTINCT)."""

    title = "genre"
    parameter_name = "genre"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        choices = [(genre, genre) for genre in GENRES]
        current = self.value()
        if current and current not in GENRES:
            choices.append((current, current))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Song]) -> QuerySet[Song]:
        value = self.value()
        return queryset.filter(genre=value) if value else queryset


# From this offset on, a page first reads its ids, then its rows: skipping rows is then a walk along an
# index rather than reading (and joining the user of) every skipped row. Below it, one query is cheaper.
DEFERRED_JOIN_FROM_OFFSET = 1_000


class DeferredJoinPaginator(CappedCountPaginator):
    """Deep pages in two short queries: the page's ids from a covering index, then those rows only.

    `?p=500` is OFFSET 49,900: in one query SQLite reads each skipped song row and looks up its user
    (about 55 ms at 1M songs); the ids alone come from songs_created / songs_status_created in a few ms.
    """

    def page(self, number: int | str) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if bottom < DEFERRED_JOIN_FROM_OFFSET:
            return super().page(number)
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        return self._get_page(self.object_list.filter(pk__in=ids), number, self)


class QueueEntryInline(admin.TabularInline):
    """The song's generation attempts; read-only, the worker owns them."""

    model = GenerationQueue
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-id",)
    fields = ("status", "priority", "retry_count", "max_retries", "queued_at", "started_at", "completed_at",
              "error_message")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Song)
class SongAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    list_display = ("title", "user", "genre", "status", "created_at", "completed_at", "play_count")
    list_filter = ("status", GenreFilter)
    list_select_related = ("user",)
    # Title and the external id; the user by exact username or email (indexed unique lookups).
    search_fields = ("title", "suno_song_id", "=user__username", "=user__email")
    # Newest first: songs_created serves it unfiltered, songs_status_created under the status
    # filter, so no list page sorts the table. Sorting by other columns would sort 1M rows.
    ordering = ("-created_at", "-id")
    sortable_by = ("created_at",)
    # A user drop-down would render every user on the song's page; a raw id stays one query.
    raw_id_fields = ("user",)
    readonly_fields = ("status", "created_at", "completed_at", "generation_time")
    inlines = (QueueEntryInline,)
    list_per_page = 100
    fieldsets = (
        (None, {"fields": ("user", "title", "genre", "status")}),
        ("Content", {"fields": ("style_prompt", "lyrics")}),
        ("Result", {"fields": ("suno_song_id", "audio_file_path", "video_file_path", "generation_time",
                               "play_count", "created_at", "completed_at")}),
    )

    def action_checkbox(self, obj: Song) -> SafeString:
        # Django's markup, written directly: rendering a CheckboxInput through the form renderer's
        # templates for each of the 100 rows was about a quarter of the changelist's time.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            ACTION_CHECKBOX_NAME, obj.pk, format_html(_("Select this object for an action - {}"), str(obj)),
        )

    def get_paginator(
        self, request: HttpRequest, queryset: Any, per_page: int, orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> CappedCountPaginator:
        capped = super().get_paginator(request, queryset, per_page, orphans, allow_empty_first_page)
        return DeferredJoinPaginator(queryset, per_page, orphans, allow_empty_first_page, cap=capped.cap)
