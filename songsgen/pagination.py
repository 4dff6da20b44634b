"""Admin pagination that stays fast on tables of millions of rows.

The count stops a few pages ahead ("more than N"); deep pages read their ids first.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import EmptyPage, Page, Paginator
from django.db import models
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

PAGES_AHEAD = 10
# From this offset on a page reads its ids first; below it one query is cheaper.
DEFERRED_JOIN_FROM_OFFSET = 1_000
# The count never goes further than this, whatever page is asked for: far below SQLite's and
# PostgreSQL's largest integer (a LIMIT past it is an error), far above any table here.
MAX_CAP = 10**12


class CappedCountPaginator(Paginator):
    """A Paginator whose count stops at `cap` rows; `more` says whether rows lie beyond."""

    object_list: models.QuerySet[models.Model]

    def __init__(
        self, object_list: models.QuerySet[models.Model], per_page: int, orphans: int = 0,
        allow_empty_first_page: bool = True, *, cap: int,
    ) -> None:
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.cap = cap
        self.more = False

    @cached_property
    def count(self) -> int:
        # LIMIT inside the count: "SELECT COUNT(*) FROM (SELECT … LIMIT cap+1)"; order_by() drops
        # the ORDER BY, which a count never needs.
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.more = counted > self.cap
        return min(counted, self.cap)

    def validate_number(self, number: int | float | str) -> int:
        """A page number in range: below 1 the first page, past the end the last (no EmptyPage)."""
        try:
            return super().validate_number(number)
        except EmptyPage:
            return 1 if int(number) < 1 else self.num_pages

    def page(self, number: int | str) -> Page[models.Model]:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if bottom < DEFERRED_JOIN_FROM_OFFSET:
            return super().page(number)
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        # The ordering stays on the queryset, so the rows come back in page order.
        return Page(self.object_list.filter(pk__in=ids), number, self)


class CappedChangeList(ChangeList):
    """A ChangeList that states its capped count honestly and names its rows as the admin says."""

    paginator: CappedCountPaginator

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # The page actually shown: an out-of-range ?p= was served as the first or last page.
        self.page_num = self.paginator.validate_number(self.page_num)

    @property
    def large_table_admin(self) -> LargeTableAdminMixin:
        """The admin that chose this ChangeList (LargeTableAdminMixin.get_changelist)."""
        assert isinstance(self.model_admin, LargeTableAdminMixin)
        return self.model_admin

    @property
    def count_text(self) -> str:
        """'More than 1100 songs', '56 jobs', '1 job': the list's counts, top and bottom."""
        nouns = self.large_table_admin.count_nouns
        singular, plural = nouns or (self.opts.verbose_name, self.opts.verbose_name_plural)
        noun = singular if self.result_count == 1 and not self.paginator.more else plural
        return f"{'More than ' if self.paginator.more else ''}{self.result_count} {noun}"

    @property
    def everything_url(self) -> str:
        """Where the search bar's "Show all" goes: every row, whatever the default filter."""
        params = {IS_POPUP_VAR: 1} if self.is_popup else {}
        return "?" + urlencode({**params, **self.large_table_admin.everything_params})


class LargeTableAdminMixin:
    """For ModelAdmins over big tables: capped counts, no unfiltered COUNT(*)."""

    show_full_result_count = False
    # Facet counts would COUNT every filter choice over the whole table on each page view.
    show_facets = admin.ShowFacets.NEVER
    paginator: ClassVar[type] = CappedCountPaginator
    # What the counts call one row and many; the model's verbose names when None.
    count_nouns: ClassVar[tuple[str, str] | None] = None
    # The query that lists every row (a default filter otherwise hides some).
    everything_params: ClassVar[dict[str, str]] = {}

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CappedChangeList

    def get_paginator(
        self, request: HttpRequest, queryset: models.QuerySet[models.Model], per_page: int, orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> CappedCountPaginator:
        try:
            page = max(1, int(request.GET.get(PAGE_VAR, 1)))
        except ValueError:
            page = 1
        cap = min((page + PAGES_AHEAD) * per_page, MAX_CAP)
        return CappedCountPaginator(queryset, per_page, orphans, allow_empty_first_page, cap=cap)

    def action_checkbox(self, obj: models.Model) -> SafeString:
        # Django's markup, written directly: rendering a CheckboxInput through the form renderer's
        # templates for each of 100 rows was about a quarter of a list page's time.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            ACTION_CHECKBOX_NAME, obj.pk, format_html(_("Select this object for an action - {}"), str(obj)),
        )
