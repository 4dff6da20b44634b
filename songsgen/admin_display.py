"""Dense admin cells shared by the songs and queue lists: badges, relative times, clipped text.

Short form in the cell, whole value on hover, so a row stays on one line at 1366 px.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

EMPTY = "–"

# (seconds in the unit, its short name, the largest count shown before the next unit takes over)
_UNITS = ((1, "s", 59), (60, "min", 59), (3600, "h", 47), (86400, "d", 59), (30 * 86400, "mo", 23),
          (365 * 86400, "y", None))


def exact_time(value: datetime) -> str:
    """The full date and time in the site's time zone, as the hover text."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def short_duration(seconds: float) -> str:
    """'45 s', '12 min', '5 h', '3 d', '4 mo', '2 y': one unit, rounded down."""
    seconds = max(0.0, seconds)
    for size, name, largest in _UNITS:
        count = int(seconds // size)
        if largest is None or count <= largest:
            return f"{count} {name}"
    raise AssertionError("unreachable: the last unit has no limit")


def relative_time(value: datetime | None, *, now: datetime | None = None, prefix: str = "") -> SafeString | str:
    """'3 d ago' (or 'in 40 s' for a future time) in a <time> whose title is the exact time."""
    if value is None:
        return EMPTY
    delta = ((now or timezone.now()) - value).total_seconds()
    text = f"in {short_duration(-delta)}" if delta < 0 else f"{short_duration(delta)} ago"
    return format_html('<time datetime="{}" title="{}">{}{}</time>', value.isoformat(), exact_time(value),
                       prefix, text)


def badge(value: str, label: str, *, hover: str = "") -> SafeString:
    """A status as a coloured pill (the admin.css static file gives each value its colour)."""
    return format_html('<span class="status-badge status-{}" title="{}">{}</span>', value, hover or label, label)


def clipped(text: str, *, css_class: str = "") -> SafeString | str:
    """`text` on one line, cut with an ellipsis by CSS where the column ends; whole on hover."""
    if not text:
        return EMPTY
    first_line = text.strip().splitlines()[0] if text.strip() else text
    return format_html('<span class="clip {}" title="{}">{}</span>', css_class, text, first_line)
