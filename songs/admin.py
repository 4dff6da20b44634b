"""Browsing songs. Every choice here keeps a list page to a few indexed queries at 1M songs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.core.exceptions import SuspiciousFileOperation, ValidationError
from django.core.files.storage import default_storage
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Field, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from queueing.admin import JobColumns
from queueing.models import GenerationQueue
from songs.models import Song, SongQuerySet
from songs.services import SongRequest, song_request, validated
from songsgen.admin_display import EMPTY, badge, clipped, exact_time, relative_time
from songsgen.pagination import LargeTableAdminMixin

if TYPE_CHECKING:
    from django.contrib.admin.options import InlineModelAdmin, _FieldsetSpec
    from django.utils.datastructures import _ListOrTuple

# The genres the service offers. The filter lists these rather than asking the database for
# SELECT DISTINCT genre, which reads every row of the table; the song form offers the same.
GENRES = (
    "ambient", "blues", "classical", "country", "electronic", "folk", "funk", "hip-hop",
    "jazz", "latin", "metal", "pop", "punk", "r&b", "reggae", "rock", "soul",
)
GENRE_CHOICES = [(genre, genre) for genre in GENRES]


class GenreFilter(admin.SimpleListFilter):
    """Filter by genre from the catalogue above (never a full-table DISTINCT)."""

    title = "genre"
    parameter_name = "genre"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        choices = [(genre, genre) for genre in GENRES]
        current = self.value()
        if current and current not in GENRES:
            choices.append((current, current))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Song]) -> QuerySet[Song]:
        value = self.value()
        return queryset.filter(genre=value) if value else queryset


class SongForm(forms.ModelForm):
    """The song's page: the genre is one of the service's (an older song keeps its own)."""

    genre = forms.ChoiceField(choices=GENRE_CHOICES)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.genre
        if current and current not in GENRES:
            field = self.fields["genre"]
            assert isinstance(field, forms.ChoiceField)  # declared above
            field.choices = [*GENRE_CHOICES, (current, f"{current} (no longer offered)")]


class SongRequestForm(SongForm):
    """"Add song": what songs.services.song_request takes (job priority too), refused alike."""

    priority = forms.IntegerField(initial=0, help_text="Higher runs first.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The job's column bounds the field (its model validators: the database's integer range).
        self.fields["priority"] = integer_form_field(GenerationQueue._meta.get_field("priority"), initial=0)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if all(name in cleaned for name in ("user", "title", "genre", "priority")):
            request = SongRequest(cleaned["user"], cleaned["title"], cleaned["genre"], cleaned.get("style_prompt", ""),
                                  cleaned.get("lyrics", ""), cleaned["priority"])
            try:
                validated(request)
            except ValidationError as exc:
                for name, errors in exc.error_dict.items():
                    self.add_error(name if name in self.fields else None, errors)
        return cleaned


def integer_form_field(model_field: Field[Any, Any], **kwargs: Any) -> forms.Field:
    """The model field's form field, its validators' bounds as min and max (the input says them)."""
    low = [v.limit_value for v in model_field.validators if isinstance(v, MinValueValidator)]
    high = [v.limit_value for v in model_field.validators if isinstance(v, MaxValueValidator)]
    field = model_field.formfield(min_value=max(low, default=None), max_value=min(high, default=None), **kwargs)
    assert field is not None  # an editable integer field has one
    return field


class QueueEntryInline(JobColumns, admin.TabularInline):
    """The song's generation attempts; read-only, the worker owns them."""

    model = GenerationQueue
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-id",)
    fields = ("status_badge", "priority", "retries", "queued", "last_run", "error")
    readonly_fields = fields

    class Media:
        css = {"all": ("songsgen/admin.css",)}

    def has_add_permission(self, request: HttpRequest, obj: Song | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Song | None = None) -> bool:
        return False


@admin.register(Song)
class SongAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    list_display = ("song_title", "owner", "genre", "status_badge", "created", "completed", "plays")
    list_display_links = ("song_title",)
    list_filter = ("status", GenreFilter)
    list_select_related = ("user",)
    # Title and the external id (through the text index); the user by exact username or email
    # (indexed unique lookups). get_search_results below runs SongQuerySet.search instead of
    # Django's icontains over a join, which reads every song.
    search_fields = ("title", "suno_song_id", "=user__username", "=user__email")
    # Newest first: songs_created serves it unfiltered, songs_status_created under the status
    # filter, so no list page sorts the table. Sorting by other columns would sort 1M rows.
    ordering = ("-created_at", "-id")
    sortable_by = ("created",)
    # A user drop-down would render every user on the song's page; a raw id stays one query.
    raw_id_fields = ("user",)
    readonly_fields = ("status", "created_at", "completed_at", "generation_seconds", "audio")
    inlines = (QueueEntryInline,)
    list_per_page = 100
    form = SongForm
    fieldsets = (
        (None, {"fields": ("user", "title", "genre", "status", "audio")}),
        ("Content", {"fields": ("style_prompt", "lyrics")}),
        ("Result", {"fields": ("suno_song_id", "audio_file_path", "video_file_path", "generation_seconds",
                               "play_count", "created_at", "completed_at")}),
    )
    # "Add song" asks only for what a request is; the service sets the rest.
    add_fieldsets: _FieldsetSpec = (
        (None, {"fields": ("user", "title", "genre", "priority")}),
        ("Content", {"fields": ("style_prompt", "lyrics")}),
    )

    class Media:
        css = {"all": ("songsgen/admin.css",)}

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Song], search_term: str
    ) -> tuple[QuerySet[Song], bool]:
        if not search_term.strip():
            return queryset, False
        assert isinstance(queryset, SongQuerySet)  # the list's rows come from Song.objects
        return queryset.search(search_term), False  # IN subqueries, no join: never duplicates

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The table takes the whole width at 1366 px; Home lists the apps.
        return super().changelist_view(request, {**(extra_context or {}), "is_nav_sidebar_enabled": False})

    # --- the list's dense columns
    # ------------------------------------------------------------------
    @admin.display(description="title")
    def song_title(self, song: Song) -> SafeString | str:
        return clipped(song.title, css_class="clip-title")

    @admin.display(description="user")
    def owner(self, song: Song) -> SafeString | str:
        return clipped(song.user.username, css_class="clip-user")

    @admin.display(description="status")
    def status_badge(self, song: Song) -> SafeString:
        hover = song.get_status_display()
        if song.completed_at is not None:
            took = f", took {song.generation_time:.0f} s" if song.generation_time is not None else ""
            hover = f"{hover} {exact_time(song.completed_at)}{took}"
        return badge(song.status, song.get_status_display(), hover=hover)

    @admin.display(description="created", ordering="created_at")
    def created(self, song: Song) -> SafeString | str:
        return relative_time(song.created_at)

    @admin.display(description="completed")
    def completed(self, song: Song) -> SafeString | str:
        return relative_time(song.completed_at)

    @admin.display(description="plays")
    def plays(self, song: Song) -> int:
        return song.play_count

    # --- the song's page -------------------------------------------------------------------------
    @admin.display(description="generation time")
    def generation_seconds(self, song: Song) -> str:
        """Seconds to one decimal: the stored float's last digits mean nothing to a reader."""
        return EMPTY if song.generation_time is None else f"{song.generation_time:,.1f} s"

    @admin.display(description="listen")
    def audio(self, song: Song) -> SafeString | str:
        """The audio player, or why there is none."""
        if not song.audio_file_path:
            return "No audio yet." if song.status != Song.Status.FAILED else EMPTY
        try:
            exists = default_storage.exists(song.audio_file_path)
        except SuspiciousFileOperation:
            exists = False
        if not exists:
            return format_html('<span class="audio-missing">The audio file {} is missing from the media '
                               "folder.</span>", song.audio_file_path)
        return format_html('<audio controls preload="metadata" src="{}"></audio>',
                           default_storage.url(song.audio_file_path))

    def get_fieldsets(self, request: HttpRequest, obj: Song | None = None) -> _FieldsetSpec:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_form(
        self, request: HttpRequest, obj: Song | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Song]]:
        if obj is None:
            kwargs["form"] = SongRequestForm
        return super().get_form(request, obj, change, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: Song | None) -> _ListOrTuple[type[InlineModelAdmin]]:
        return () if obj is None else super().get_inlines(request, obj)

    def save_model(self, request: HttpRequest, obj: Song, form: forms.ModelForm, change: bool) -> None:
        """A new song is a song request: the song and its queue entry together (songs.services)."""
        if change:
            super().save_model(request, obj, form, change)
            return
        song = song_request(user=obj.user, title=obj.title, genre=obj.genre, style_prompt=obj.style_prompt,
                            lyrics=obj.lyrics, priority=form.cleaned_data["priority"])
        # The admin goes on with `obj` (its history entry, the redirect): make it the saved song.
        for field in Song._meta.concrete_fields:
            setattr(obj, field.attname, getattr(song, field.attname))
        obj._state.adding, obj._state.db = False, song._state.db

    def get_deleted_objects(
        self, objs: Sequence[Song] | QuerySet[Song], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        # A song's jobs go with it: deleting the song is the song's permission, though the queue
        # admin lets no one delete a job on its own.
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(str(GenerationQueue._meta.verbose_name))
        return deleted, model_count, perms_needed, protected
