"""Browsing songs. Every choice here keeps a list page to a few indexed queries at 1M songs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from queueing.models import GenerationQueue
from songs.models import Song
from songsgen.db.pagination import LargeTableAdminMixin

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
    # Title and the external id (through the text index); the user by exact username or email
    # (indexed unique lookups). get_search_results below runs SongQuerySet.search instead of Django's
    # icontains over a join, which reads every song.
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
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Song], search_term: str
    ) -> tuple[QuerySet[Song], bool]:
        if not search_term.strip():
            return queryset, False
        return queryset.search(search_term), False  # IN subqueries, no join: never duplicates

    fieldsets = (
        (None, {"fields": ("user", "title", "genre", "status")}),
        ("Content", {"fields": ("style_prompt", "lyrics")}),
        ("Result", {"fields": ("suno_song_id", "audio_file_path", "video_file_path", "generation_time",
                               "play_count", "created_at", "completed_at")}),
    )
