"""The health of the system at a glance, for the admin's home page.

Totals come from the tallies; the backlog from indexes that find the oldest waiting item at once
and count at most BACKLOG_CAP of them. Nothing here reads more rows as the tables grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.utils import timezone

from campaigns.models import Campaign, Cursor
from campaigns.progress import summaries
from delivery.models import OutboxEmail

from . import tallies
from .models import Event, User
from .tallies import TICK, Want, hour_of

BACKLOG_CAP = 10_000


@dataclass
class Backlog:
    name: str
    count: int  # at most BACKLOG_CAP + 1: "more than BACKLOG_CAP"
    oldest: datetime | None
    late_after: timedelta  # older than this, something is not keeping up
    changelist: str = ""  # the admin list of what waits: its URL name and query
    query: str = ""

    @property
    def more(self) -> bool:
        return self.count > BACKLOG_CAP

    def is_late(self, now: datetime) -> bool:
        return self.oldest is not None and now - self.oldest > self.late_after


@dataclass
class Health:
    now: datetime
    sent_24h: int
    sent_7d: int
    sent_24h_since: datetime
    sent_7d_since: datetime
    cursors_failed: int
    cursors_diverged: int
    cursors_failed_24h: int
    emails_failed: int
    emails_failed_24h: int
    emails_unknown: int
    backlog: list[Backlog]
    last_tick: datetime | None
    tick_late_after: timedelta
    campaigns: list = field(default_factory=list)  # (Campaign, progress.Summary), running ones

    @property
    def tick_is_late(self) -> bool:
        return self.last_tick is None or self.now - self.last_tick > self.tick_late_after


def tick_late_after() -> timedelta:
    """How long without a tick before the home page warns: a few ticks, at least a minute."""
    return timedelta(seconds=max(60.0, 5 * settings.SEGFLOW_TICK_SECONDS))


def health(now: datetime | None = None) -> Health:
    now = now or timezone.now()
    day_start = hour_of(now - timedelta(hours=23))
    week_start = hour_of(now - timedelta(days=7) + timedelta(hours=1))
    counts = tallies.read(
        Want("sends", since=week_start),
        Want("cursors"),
        Want("cursor_failures", since=day_start),
        Want("emails"),
        Want("email_failures", since=day_start),
    )
    sent_7d = sent_24h = failed = diverged = failed_24h = 0
    emails_failed = emails_unknown = emails_failed_24h = 0
    for key, n in counts.items():
        if key.kind == "sends":
            sent_7d += n
            sent_24h += n if key.hour >= day_start else 0
        elif key.kind == "cursors":
            failed += n if key.a == Cursor.Status.FAILED else 0
            diverged += n if key.a == Cursor.Status.DIVERGED else 0
        elif key.kind == "cursor_failures":
            failed_24h += n
        elif key.kind == "emails":
            emails_failed += n if key.b == OutboxEmail.Status.FAILED else 0
            emails_unknown += n if key.b == OutboxEmail.Status.UNKNOWN else 0
        elif key.kind == "email_failures":
            emails_failed_24h += n
    late = tick_late_after()
    sweep = timedelta(seconds=settings.SEGFLOW_SWEEP_AFTER_SECONDS)
    return Health(
        now=now,
        sent_24h=sent_24h,
        sent_7d=sent_7d,
        sent_24h_since=day_start,
        sent_7d_since=week_start,
        cursors_failed=failed,
        cursors_diverged=diverged,
        cursors_failed_24h=failed_24h,
        emails_failed=emails_failed,
        emails_failed_24h=emails_failed_24h,
        emails_unknown=emails_unknown,
        backlog=[
            _backlog(
                "overdue campaign steps",
                Cursor.objects.filter(status=Cursor.Status.ACTIVE, due_at__lt=now - late),
                "due_at",
                late,
                "admin:campaigns_cursor_changelist",
                {"status__exact": "active", "due_at__lt": (now - late).isoformat()},
            ),
            _backlog(
                "queued emails",
                OutboxEmail.objects.filter(status=OutboxEmail.Status.QUEUED),
                "created_at",
                sweep * 2,
                "admin:delivery_outboxemail_changelist",
                {"status__exact": "queued"},
            ),
            _backlog(
                "unprocessed events",
                Event.objects.filter(processed_at__isnull=True),
                "created_at",
                sweep * 2,
                "admin:segflow_event_changelist",
                {"processed_at__isnull": "True"},
                order="pk",
            ),
            _backlog(
                "users waiting for segment evaluation",
                User.objects.filter(evaluation_pending=True),
                "updated_at",
                sweep * 2,
                "admin:segflow_user_changelist",
                {"evaluation_pending__exact": "1"},
            ),
        ],
        last_tick=tallies.last_beat(TICK),
        tick_late_after=late,
        campaigns=_campaigns(now),
    )


def _campaigns(now: datetime) -> list:
    running = list(Campaign.objects.filter(active=True).order_by("name"))
    figures = summaries(running, now)
    return [(campaign, figures[campaign.pk]) for campaign in running]


def _backlog(
    name: str,
    rows,
    column: str,
    late_after: timedelta,
    changelist: str,
    query: dict,
    order: str | None = None,  # an indexed order whose first row is the oldest
) -> Backlog:
    oldest = rows.order_by(order or column).values_list(column, flat=True).first()
    count = rows.order_by()[: BACKLOG_CAP + 1].count() if oldest is not None else 0
    return Backlog(name, count, oldest, late_after, changelist, urlencode(query))
