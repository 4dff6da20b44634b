"""Admin pagination that stays fast on tables of millions of rows.

Django's admin counts the whole filtered result (`COUNT(*)`) on every list page, which on SQLite
reads every matching row. We count only as far as the page being shown plus a few pages ahead:
the count then costs about as much as fetching the page itself, deep pages stay reachable, and
the list says "more than N" instead of a number it never computed.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.utils.functional import cached_property

PAGES_AHEAD = 10


class CappedCountPaginator(Paginator):
    """A Paginator whose count stops at `cap` rows; `more` says whether rows lie beyond."""

    def __init__(self, object_list: Any, per_page: int, *args: Any, cap: int, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        self.cap = cap
        self.more = False

    @cached_property
    def count(self) -> int:
        # LIMIT inside the count: "SELECT COUNT(*) FROM (SELECT … LIMIT cap+1)"; order_by() drops
        # the ORDER BY, which a count never needs.
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.more = counted > self.cap
        return min(counted, self.cap)


class LargeTableAdminMixin:
    """For ModelAdmins over big tables: capped counts, no unfiltered COUNT(*)."""

    show_full_result_count = False
    # Facet counts would COUNT every filter choice over the whole table on each page view.
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator

    def get_paginator(
        self, request: HttpRequest, queryset: Any, per_page: int, orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> CappedCountPaginator:
        try:
            page = max(1, int(request.GET.get(admin.views.main.PAGE_VAR, 1)))
        except ValueError:
            page = 1
        cap = (page + PAGES_AHEAD) * per_page
        return CappedCountPaginator(queryset, per_page, orphans, allow_empty_first_page, cap=cap)
