"""`{% served_by %}`: which database served this page and how far behind it is (shown only with replicas)."""

from __future__ import annotations

from typing import Any

from django import template

from songsgen.db.replicas import aliases, current, health

register = template.Library()


@register.inclusion_tag("admin/served_by.html")
def served_by() -> dict[str, Any]:
    """The database the page's last read went to, its lag, and why the primary when it was the primary."""
    reads = current()
    if reads is None or not aliases():
        return {"shown": False}
    if reads.served in aliases():
        lag = health.state(reads.served).lag_seconds
        return {"shown": True, "served": reads.served, "replica": True, "lag": f"{lag or 0:.1f}"}
    return {"shown": True, "served": "primary", "replica": False, "why": reads.why_primary}
