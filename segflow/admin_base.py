"""Admin pieces shared by the apps: read-only admins, status labels, and charts drawn as SVG on the
server (nothing is fetched from elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.contrib import admin
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

ADMIN_CSS = "segflow/admin.css"


class ReadOnlyAdmin(admin.ModelAdmin):
    """For rows that only code (a push, the workers) writes: browse them, change nothing."""

    class Media:
        css = {"all": [ADMIN_CSS]}

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CodeDefinedAdmin(ReadOnlyAdmin):
    """Segments, campaigns, templates and transactions: defined in the config, shown with source."""

    @admin.display(description="source code")
    def source_code(self, obj):
        return format_html('<pre class="sf-code">{}</pre>', obj.source)


# ---------------------------------------------------------------------------------------------
# Status labels: one colour per meaning, the same on every page.

TONES = {
    # cursors
    "active": "info",
    "completed": "good",
    "exited": "quiet",
    "diverged": "warn",
    "failed": "bad",
    "ended": "quiet",
    "restarted": "quiet",
    # emails
    "queued": "info",
    "sending": "info",
    "sent": "good",
    "skipped": "quiet",
    "unknown": "warn",
    # what the provider reported
    "delivered": "good",
    "bounced": "bad",
    "complained": "bad",
    "opened": "good",
    "clicked": "good",
    "unsubscribed": "warn",
    "test": "test",
}


def status_badge(status: str, label: str | None = None) -> SafeString:
    """A status as a coloured label; `label` is what people read (the status's display name)."""
    return format_html(
        '<span class="sf-badge sf-{}">{}</span>', TONES.get(status, "quiet"), label or status
    )


# ---------------------------------------------------------------------------------------------
# Charts.


@dataclass(frozen=True)
class Bar:
    value: int
    href: str = ""
    title: str = ""


SERIES_COLOURS = ("#3b82f6", "#16a34a", "#f59e0b", "#dc2626")


def bar_chart(
    groups: Sequence[tuple[str, Sequence[Bar]]],
    series: Sequence[str],
    *,
    height: int = 160,
    label_every: int = 5,
) -> SafeString:
    """Grouped bars (one group a day, one bar a series), each a link to what it counts."""
    width_per_group, gap, top, bottom, left = 22, 4, 12, 22, 36
    width = left + len(groups) * width_per_group + 8
    biggest = max([bar.value for _, bars in groups for bar in bars] + [1])
    scale = (height - top - bottom) / biggest
    bar_width = (width_per_group - gap) / max(len(series), 1)
    parts = [
        f'<svg class="sf-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="sf-axis">{biggest}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" class="sf-axis">0</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'class="sf-baseline"/>',
    ]
    for g, (label, bars) in enumerate(groups):
        x0 = left + g * width_per_group + gap / 2
        for s, bar in enumerate(bars):
            h = bar.value * scale
            y = height - bottom - h
            rect = (
                f'<rect x="{x0 + s * bar_width:.1f}" y="{y:.1f}" width="{bar_width - 1:.1f}" '
                f'height="{max(h, 0.5 if bar.value else 0):.1f}" '
                f'fill="{SERIES_COLOURS[s % len(SERIES_COLOURS)]}">'
                f"<title>{escape(bar.title)}</title></rect>"
            )
            if bar.href and bar.value:
                rect = f'<a href="{escape(bar.href)}">{rect}</a>'
            parts.append(rect)
        if g % label_every == 0 or g == len(groups) - 1:
            parts.append(
                f'<text x="{x0 + (width_per_group - gap) / 2:.1f}" y="{height - 6}" '
                f'text-anchor="middle" class="sf-axis">{escape(label)}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        format_html(
            '<span class="sf-legend"><i style="background:{}"></i>{}</span>',
            SERIES_COLOURS[i % len(SERIES_COLOURS)],
            name,
        )
        for i, name in enumerate(series)
    )
    return mark_safe(f'<div class="sf-chart-box">{"".join(parts)}<div>{legend}</div></div>')


def line_chart(
    points: Sequence[tuple[datetime, int]], *, width: int = 720, height: int = 180
) -> SafeString:
    """A value over time (a segment's size), a dot at each measure."""
    if not points:
        return mark_safe('<p class="sf-muted">Nothing measured yet.</p>')
    top, bottom, left, right = 12, 24, 56, 12
    times = [p[0].timestamp() for p in points]
    values = [p[1] for p in points]
    t0, t1 = min(times), max(times)
    v0, v1 = 0, max(values + [1])
    span = (t1 - t0) or 1

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - right) if t1 > t0 else (width + left) / 2

    def y(v: float) -> float:
        return height - bottom - (v - v0) / (v1 - v0) * (height - top - bottom)

    coords = [(x(t), y(v)) for t, v in zip(times, values, strict=True)]
    path = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
    parts = [
        f'<svg class="sf-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="sf-axis">{v1:,}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" class="sf-axis">0</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'class="sf-baseline"/>',
        f'<polyline points="{path}" fill="none" stroke="{SERIES_COLOURS[0]}" stroke-width="2"/>',
    ]
    for (a, b), (when, value) in zip(coords, points, strict=True):
        parts.append(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{SERIES_COLOURS[0]}">'
            f"<title>{value:,} members at {when:%Y-%m-%d %H:%M} UTC</title></circle>"
        )
    for when, anchor, at in ((points[0][0], "start", left), (points[-1][0], "end", width - right)):
        parts.append(
            f'<text x="{at}" y="{height - 6}" text-anchor="{anchor}" class="sf-axis">'
            f"{when:%Y-%m-%d %H:%M}</text>"
        )
    parts.append("</svg>")
    return mark_safe(f'<div class="sf-chart-box">{"".join(parts)}</div>')
