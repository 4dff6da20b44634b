"""The generation queue in the admin: read-only, changed only through the retry and cancel actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from queueing.models import CLAIM_ORDER, GenerationQueue, TransitionError
from songsgen.db.pagination import LargeTableAdminMixin

ALL = "all"


class QueueStatusFilter(admin.SimpleListFilter):
    """Status filter that opens on the queued jobs: the queue as the worker sees it.

    Finished jobs pile up over time; listing every job in claim order would sort the whole table,
    whereas one status in claim order is served by the queue_status_order index ("All" is listed
    newest first, by the primary key).
    """

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(GenerationQueue.Status.choices) + [(ALL, "All")]

    def value(self) -> str:
        return super().value() or GenerationQueue.Status.QUEUED

    def choices(self, changelist: Any) -> Any:
        # No "All" entry of Django's (it would mean "queued" here); ours is an explicit value.
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == str(lookup),
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[GenerationQueue]) -> QuerySet[GenerationQueue]:
        value = self.value()
        return queryset if value == ALL else queryset.filter(status=value)


@admin.register(GenerationQueue)
class GenerationQueueAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    list_display = ("id", "song", "status", "priority", "retry_count", "max_retries", "queued_at", "started_at",
                    "completed_at", "short_error")
    list_filter = (QueueStatusFilter,)
    list_select_related = ("song",)
    search_fields = ("=song__id",)
    ordering = CLAIM_ORDER
    sortable_by = ()
    actions = ("retry_jobs", "cancel_jobs")
    list_per_page = 100
    readonly_fields = ("song", "priority", "retry_count", "max_retries", "status", "error_message",
                       "queued_at", "started_at", "completed_at")

    # Counts in the stats box stop here: one indexed query whatever the table's size.
    stats_cap = 10_000

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """The list, with the queue at a glance above it (GenerationQueueQuerySet.stats: one query)."""
        extra_context = {**(extra_context or {}), "queue_stats": GenerationQueue.objects.stats(cap=self.stats_cap)}
        return super().changelist_view(request, extra_context)

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        # Under "All" the claim order would sort every job ever run; newest first uses the key.
        if request.GET.get(QueueStatusFilter.parameter_name) == ALL:
            return ("-id",)
        return CLAIM_ORDER

    @admin.display(description="error")
    def short_error(self, obj: GenerationQueue) -> str:
        return obj.error_message[:80]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The worker owns these rows; the page is a view, changes go through the actions.
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Retry and cancel need the model's change permission, though the form stays read-only."""
        return request.user.has_perm("queueing.change_generationqueue")

    def _transition(self, request: HttpRequest, queryset: QuerySet[GenerationQueue], method: str, done: str) -> None:
        ok = 0
        for job in queryset.select_related("song"):
            try:
                getattr(job, method)()
                ok += 1
            except TransitionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        if ok:
            self.message_user(request, f"{ok} job(s) {done}.", messages.SUCCESS)

    @admin.action(description="Retry selected failed jobs", permissions=["operate"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[GenerationQueue]) -> None:
        self._transition(request, queryset, "retry", "queued again")

    @admin.action(description="Cancel selected queued jobs", permissions=["operate"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[GenerationQueue]) -> None:
        self._transition(request, queryset, "cancel", "cancelled")
