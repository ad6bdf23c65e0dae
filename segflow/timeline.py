"""Everything that happened to one user, newest first, for the admin's user page.

Events (the providers' reports arrive as `email.*` events), segments entered and left, campaigns
entered and ended, campaign steps and emails, merged from the user's own rows: each source reads
at most as many rows as the pages up to the one shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from heapq import merge
from itertools import islice

from campaigns.models import Cursor, CursorStep
from campaigns.progress import duration
from delivery.models import OutboxEmail
from delivery.tallies import TEST_KEY_PREFIX
from segments.models import MembershipHistory

from .models import Event, User

PER_PAGE = 50


# At the same moment, what caused what: an event, then segments, campaigns, steps, emails, and
# what the provider said about them (newest first, the other way round).
# A campaign's steps and emails at the same moment go by step number.
RANK = {"event": 0, "segment": 1, "campaign": 2, "step": 3, "email": 3, "delivery": 5, "end": 6}


@dataclass(order=True)
class Entry:
    at: datetime
    rank: int
    step: int  # a campaign step's number, else 0
    order: int  # ties: the later written first
    kind: str = field(compare=False)  # event, segment, campaign, step, email, delivery, end
    badge: str = field(compare=False)  # a status for the label's colour
    title: str = field(compare=False)
    detail: str = field(compare=False, default="")
    link: tuple[str, object] | None = field(compare=False, default=None)  # url name, pk

    @property
    def label(self) -> str:
        return "campaign" if self.kind == "end" else self.kind


@dataclass
class Page:
    entries: list[Entry]
    number: int
    has_older: bool


def timeline(user: User, page: int = 0, per_page: int = PER_PAGE) -> Page:
    """Page `page` (0 = the newest) of the user's timeline."""
    wanted = (page + 1) * per_page + 1
    cursors = {c.pk: c for c in Cursor.objects.filter(user=user).select_related("campaign")}
    sources = [
        _events(user, wanted),
        _memberships(user, wanted),
        _campaigns(cursors.values()),
        _steps(cursors, wanted),
        _emails(user, wanted),
    ]
    newest_first = merge(*(sorted(s, reverse=True) for s in sources), reverse=True)
    rows = list(islice(newest_first, page * per_page, wanted))
    return Page(entries=rows[:per_page], number=page, has_older=len(rows) > per_page)


def _events(user: User, limit: int) -> list[Entry]:
    entries = []
    for pk, name, attributes, created_at in (
        Event.objects.filter(user=user)
        .order_by("-created_at", "-id")
        .values_list("pk", "name", "attributes", "created_at")[:limit]
    ):
        attributes = attributes if isinstance(attributes, dict) else {}
        if name.startswith("email."):
            # What the email provider reported: about one of the user's emails in the outbox.
            what = name.removeprefix("email.")
            template = attributes.get("template", "")
            title = f'email {what}: "{template}"' if template else f"email {what}"
            detail = ", ".join(
                str(attributes[k]) for k in ("recipient", "description", "url") if attributes.get(k)
            )
            outbox_id = attributes.get("outbox_id")
            link = ("admin:delivery_outboxemail_change", outbox_id) if outbox_id else None
            entries.append(_entry(created_at, pk, "delivery", what, title, detail, link))
        else:
            detail = ", ".join(f"{k}: {v}" for k, v in attributes.items())[:300]
            link = ("admin:segflow_event_change", pk)
            entries.append(_entry(created_at, pk, "event", "event", f"event {name}", detail, link))
    return entries


def _entry(at, order, kind, badge, title, detail="", link=None, step=0) -> Entry:
    return Entry(at, RANK.get(kind, 9), step, order, kind, badge, title, detail, link)


def _memberships(user: User, limit: int) -> list[Entry]:
    return [
        _entry(
            at,
            pk,
            "segment",
            "active" if entered else "exited",
            f'{"entered" if entered else "left"} segment "{name}"',
            "",
            ("admin:segments_segment_change", segment_id),
        )
        for pk, segment_id, name, entered, at in MembershipHistory.objects.filter(user=user)
        .order_by("-at", "-id")
        .values_list("pk", "segment_id", "segment_name", "entered", "at")[:limit]
    ]


def _campaigns(cursors) -> list[Entry]:
    entries = []
    for cursor in cursors:
        link = ("admin:campaigns_cursor_change", cursor.pk)
        entries.append(
            _entry(
                cursor.created_at,
                cursor.pk,
                "campaign",
                "active",
                f'entered campaign "{cursor.campaign.name}"',
                "",
                link,
            )
        )
        if cursor.ended_at is not None:
            entries.append(
                _entry(
                    cursor.ended_at,
                    cursor.pk,
                    "end",
                    cursor.status,
                    f'{cursor.get_status_display()} in campaign "{cursor.campaign.name}"',
                    cursor.end_reason,
                    link,
                )
            )
    return entries


def _steps(cursors: dict[int, Cursor], limit: int) -> list[Entry]:
    """The steps that sent nothing (waits ...): a sent step shows as its email."""
    entries = []
    for pk, cursor_id, index, kind, args, created_at in (
        CursorStep.objects.filter(cursor_id__in=list(cursors))
        .exclude(kind="send_email")
        .order_by("-created_at", "-id")
        .values_list("pk", "cursor_id", "index", "kind", "args", "created_at")[:limit]
    ):
        what = f"wait {duration(args.get('seconds', 0))}" if kind == "wait" else kind
        campaign = cursors[cursor_id].campaign.name
        entries.append(
            _entry(
                created_at,
                pk,
                "step",
                "queued",
                f"{campaign}, step {index + 1}: {what}",
                "",
                ("admin:campaigns_cursor_change", cursor_id),
                step=index + 1,
            )
        )
    return entries


def _emails(user: User, limit: int) -> list[Entry]:
    entries = []
    for row in (
        OutboxEmail.objects.filter(user=user)
        .exclude(key__startswith=TEST_KEY_PREFIX)
        .order_by("-created_at", "-id")
        .only(
            "pk",
            "subject",
            "status",
            "reason",
            "template_name",
            "campaign_name",
            "step_index",
            "transaction_name",
            "created_at",
            "to_address",
        )[:limit]
    ):
        if row.campaign_name:
            cause = f"campaign {row.campaign_name}, step {(row.step_index or 0) + 1}"
        elif row.transaction_name:
            cause = f"transaction {row.transaction_name}"
        else:
            cause = row.template_name
        subject = row.subject or f"({row.template_name}: not rendered)"
        detail = f"{cause}; to {row.to_address or '(no address)'}"
        if row.reason:
            detail += f"; {row.reason}"
        entries.append(
            _entry(
                row.created_at,
                row.pk,
                "email",
                row.status,
                f'email "{subject}"',
                detail,
                ("admin:delivery_outboxemail_change", row.pk),
                step=(row.step_index or 0) + 1 if row.campaign_name else 0,
            )
        )
    return entries
