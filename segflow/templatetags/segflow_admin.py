"""Filters for segflow's admin pages: numbers, moments, and status labels."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

from segflow.admin_base import status_badge

register = template.Library()


@register.filter
def num(value) -> str:
    """1234567 -> 1,234,567."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "" if value is None else str(value)


def ago(moment: datetime, now: datetime | None = None) -> str:
    """`3 minutes ago`, `in 2 days` ..."""
    now = now or timezone.now()
    seconds = (moment - now).total_seconds()
    future, seconds = seconds > 0, abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            break
    else:
        return (
            "now"
            if seconds < 1
            else ("in" if future else "") + " seconds" + ("" if future else " ago")
        )
    return f"in {text}" if future else f"{text} ago"


@register.filter
def when(moment: datetime | None) -> str:
    """A moment with how long ago (or until) it is, for people: `2026-03-02 09:00 UTC (3 hours
    ago)`."""
    if moment is None:
        return "never"
    return format_html(
        '<time datetime="{}" title="{}">{} <span class="sf-muted">({})</span></time>',
        moment.isoformat(),
        moment.isoformat(),
        f"{timezone.localtime(moment):%Y-%m-%d %H:%M} UTC",
        ago(moment),
    )


@register.filter
def due(moment: datetime | None) -> str:
    """When a step is due; a moment already past shows as overdue."""
    if moment is None:
        return ""
    text = when(moment)
    if moment < timezone.now():
        return format_html('{} <span class="sf-badge sf-warn">due now</span>', text)
    return text


@register.filter
def badge(status: str, label: str = "") -> str:
    return status_badge(status, label or None)


@register.filter
def admin_quote(value) -> str:
    """A primary key as the admin's URLs carry it (user ids may hold any character)."""
    from django.contrib.admin.utils import quote

    return quote(str(value))


@register.filter
def late(backlog, now) -> bool:
    """Whether a backlog's oldest item waits longer than it should."""
    return backlog.is_late(now)


@register.filter
def seconds(value) -> str:
    """How long something took: `12 ms`, `3.4 s`, `2 min 5 s`."""
    if value is None:
        return "-"
    value = float(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60)} s"
