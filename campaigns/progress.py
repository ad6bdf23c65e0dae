"""A campaign's progress as the admin shows it: the funnel, where the active users are, what
failed, its emails, and entries and sends by day.

Every figure comes from the tallies (segflow/tallies.py) or from an index that answers it in a
few rows: nothing here reads more rows as the campaign grows. Where the active users are is
counted by step number; what each step is, and its line in the flow's code, is read from a few
of the cursors at it (replayed, when the flow is at hand).
"""

from __future__ import annotations

import linecache
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.utils import timezone

from segflow.config.introspection import literal_send_email_templates
from segflow.tallies import Want, hour_of, read
from segflow.versions import describe as describe_version

from .flow import FlowDiverged, FlowFailed, FlowRun, RecordedStep
from .models import Campaign, Cursor, CursorStep
from .steps import describe_record

STATUSES = [value for value, _ in Cursor.Status.choices]
# What an email's figures are, in the order the campaign page shows them.
EMAIL_FIGURES = (
    "queued",  # with those being handed to the provider at this moment (`sending`)
    "sent",
    "failed",
    "skipped",
    "unknown",
    "delivered",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
)
# Shown even when zero; the others only when some email has them.
ALWAYS_SHOWN = (
    "queued",
    "sent",
    "failed",
    "skipped",
    "delivered",
    "bounced",
    "opened",
    "clicked",
    "unsubscribed",
)
SAMPLE = 20  # cursors read at each step to name it
DAYS = 30

Flow = Callable[..., Iterator[Any]]


@dataclass
class StepGroup:
    """The active users at one step number."""

    step_count: int
    users: int
    next_due: datetime | None
    label: str
    line: int | None = None
    code: str = ""
    example_cursor: int | None = None


@dataclass
class ErrorGroup:
    status: str
    reason: str
    users: int


@dataclass
class EmailFigures:
    template: str
    figures: dict[str, int]
    reasons: list[tuple[str, str, int]] = field(default_factory=list)  # status, reason, emails


@dataclass
class SplitFigures:
    """The users an `rt.split` of the flow put in each branch."""

    name: str  # the split's `name`, "" for an unnamed one
    branches: dict[str, int]

    @property
    def users(self) -> int:
        return sum(self.branches.values())

    def share(self, branch: str) -> float:
        return self.branches.get(branch, 0) / self.users if self.users else 0.0


@dataclass
class Day:
    day: date
    entries: int
    sends: int


@dataclass
class Progress:
    campaign: Campaign
    by_status: dict[str, int]
    steps: list[StepGroup]
    errors: list[ErrorGroup]
    emails: list[EmailFigures]
    email_figures: list[str]  # the columns worth showing
    days: list[Day]
    splits: list[SplitFigures] = field(default_factory=list)

    @property
    def entered(self) -> int:
        return sum(self.by_status.values())


def progress(campaign: Campaign, flow: Flow | None = None, now: datetime | None = None) -> Progress:
    now = now or timezone.now()
    owner = str(campaign.pk)
    since = now - timedelta(days=DAYS - 1)
    counts = read(
        Want("cursors", owner),
        Want("cursor_errors", owner),
        Want("entries", owner, since=since),
        Want("emails", campaign.name),
        Want("email_reasons", campaign.name),
        Want("sends", campaign.name, since=since),
        Want("branches", owner),
    )
    by_kind: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for key, n in counts.items():
        by_kind[key.kind].append((key, n))

    by_status = dict.fromkeys(STATUSES, 0)
    at_step: Counter[int] = Counter()
    for key, n in by_kind["cursors"]:
        by_status[key.a] = by_status.get(key.a, 0) + n
        if key.a == Cursor.Status.ACTIVE:
            at_step[int(key.b or 0)] += n
    steps = [
        _step_group(campaign, step, users, flow) for step, users in sorted(at_step.items()) if users
    ]
    errors = sorted(
        (ErrorGroup(key.a, key.b, n) for key, n in by_kind["cursor_errors"] if n),
        key=lambda e: (-e.users, e.status, e.reason),
    )
    emails, columns = _email_figures(campaign, by_kind)
    return Progress(
        campaign=campaign,
        by_status=by_status,
        steps=steps,
        errors=errors,
        emails=emails,
        email_figures=columns,
        days=_days(now, by_kind["entries"], by_kind["sends"]),
        splits=_splits(by_kind["branches"]),
    )


def _splits(branches) -> list[SplitFigures]:
    splits: dict[str, SplitFigures] = {}
    for key, n in branches:
        if n:
            split = splits.setdefault(key.a, SplitFigures(key.a, {}))
            split.branches[key.b] = split.branches.get(key.b, 0) + n
    for split in splits.values():
        split.branches = dict(sorted(split.branches.items()))
    return [splits[name] for name in sorted(splits)]


def _email_figures(campaign: Campaign, by_kind) -> tuple[list[EmailFigures], list[str]]:
    templates: dict[str, EmailFigures] = {}
    for name in literal_send_email_templates(campaign.source):
        templates.setdefault(name, EmailFigures(name, dict.fromkeys(EMAIL_FIGURES, 0)))
    for key, n in by_kind["emails"]:
        row = templates.setdefault(key.a, EmailFigures(key.a, dict.fromkeys(EMAIL_FIGURES, 0)))
        row.figures[key.b] = row.figures.get(key.b, 0) + n
    for key, n in by_kind["email_reasons"]:
        status, _, reason = key.b.partition(": ")
        row = templates.setdefault(key.a, EmailFigures(key.a, dict.fromkeys(EMAIL_FIGURES, 0)))
        row.reasons.append((status, reason, n))
    for row in templates.values():
        row.reasons.sort(key=lambda r: (-r[2], r[0], r[1]))
    columns = [
        name
        for name in EMAIL_FIGURES
        if name in ALWAYS_SHOWN or any(row.figures.get(name) for row in templates.values())
    ]
    return list(templates.values()), columns


def _days(now: datetime, entries, sends) -> list[Day]:
    first = (now - timedelta(days=DAYS - 1)).date()
    days = {first + timedelta(days=i): Day(first + timedelta(days=i), 0, 0) for i in range(DAYS)}
    for key, n in entries:
        if key.hour and key.hour.date() in days:
            days[key.hour.date()].entries += n
    for key, n in sends:
        if key.hour and key.hour.date() in days:
            days[key.hour.date()].sends += n
    return list(days.values())


# ---------------------------------------------------------------------------------------------
# Naming a step.


def _step_group(campaign: Campaign, step_count: int, users: int, flow: Flow | None) -> StepGroup:
    sample = list(
        Cursor.objects.filter(campaign=campaign, status=Cursor.Status.ACTIVE, step_count=step_count)
        .order_by("due_at")
        .values_list("pk", "due_at", "user_id")[:SAMPLE]
    )
    group = StepGroup(
        step_count=step_count,
        users=users,
        next_due=sample[0][1] if sample else None,
        label="",
        example_cursor=sample[0][0] if sample else None,
    )
    histories: dict[int, list[RecordedStep]] = defaultdict(list)
    for cursor_id, kind, args, result, snapshot in (
        CursorStep.objects.filter(cursor_id__in=[pk for pk, _, _ in sample])
        .order_by("cursor_id", "index")
        .values_list("cursor_id", "kind", "args", "result", "user_snapshot")
    ):
        histories[cursor_id].append(RecordedStep(kind, args, result, snapshot))
    labels = Counter(position_label(histories[pk]) for pk, _, _ in sample)
    if not labels:
        group.label = position_label([])
    elif len(labels) == 1:
        group.label = next(iter(labels))
    else:
        group.label = "one of: " + "; ".join(label for label, _ in labels.most_common())
    if flow is not None and sample:
        pk, _, user_id = sample[0]
        group.line, group.code = source_line(flow, campaign.name, user_id, histories[pk])
    return group


def position_label(history: list[RecordedStep]) -> str:
    """Where a cursor with this history waits, as a person reads it:
    `waiting 3 days after "welcome"`."""
    if not history:
        return "just entered: the first step runs at once"
    last = history[-1]
    emails = [s.args.get("template") for s in history if s.kind == "send_email"]
    after = f' after "{emails[-1]}"' if emails else ""
    if last.kind == "wait":
        return f"waiting {duration(last.args.get('seconds', 0))}{after}"
    if last.kind == "send_email":
        return f'sent "{last.args.get("template")}"'
    return f"at {describe_record(last.kind, last.args)}{after}"


def source_line(
    flow: Flow, campaign: str, user_id: str, history: list[RecordedStep]
) -> tuple[int | None, str]:
    """The line of the flow's code a cursor with this history waits at, and its text."""
    try:
        run = FlowRun(flow, user_id=user_id, attributes={}, history=history, campaign=campaign)
    except (FlowDiverged, FlowFailed):
        return None, ""
    position = run.position
    if position is None:
        return None, ""
    filename, line = position
    return line, linecache.getline(filename, line).strip()


def duration(seconds: float) -> str:
    """`3 days`, `1 day 12 hours`, `90 minutes` ... as people say it."""
    seconds = int(round(seconds or 0))
    if seconds == 0:
        return "no time"
    parts = []
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and (unit != "week" or seconds % size == 0):
            count, seconds = divmod(seconds, size)
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    if seconds:
        parts.append(f"{seconds} second{'s' if seconds != 1 else ''}")
    return " ".join(parts[:2])


# ---------------------------------------------------------------------------------------------
# The campaign list.


@dataclass
class Summary:
    by_status: dict[str, int]
    sent_24h: int

    @property
    def failures(self) -> int:
        return self.by_status.get(Cursor.Status.FAILED, 0) + self.by_status.get(
            Cursor.Status.DIVERGED, 0
        )


def summaries(campaigns: list[Campaign], now: datetime | None = None) -> dict[int, Summary]:
    """Each campaign's cursors by status and emails sent in the last 24 hours: two reads of the
    tallies for the whole list."""
    now = now or timezone.now()
    counts = read(Want("cursors"), Want("sends", since=now - timedelta(hours=23)))
    ids = {str(c.pk): c.pk for c in campaigns}
    names = {c.name: c.pk for c in campaigns}
    result = {c.pk: Summary(dict.fromkeys(STATUSES, 0), 0) for c in campaigns}
    for key, n in counts.items():
        if key.kind == "cursors" and key.owner in ids:
            by_status = result[ids[key.owner]].by_status
            by_status[key.a] = by_status.get(key.a, 0) + n
        elif key.kind == "sends" and key.owner in names:
            result[names[key.owner]].sent_24h += n
    return result


def sends_window_start(now: datetime) -> datetime:
    """Where "the last 24 hours" of sends starts: counts are kept by the hour, so the window is
    the current hour and the 23 before it."""
    return hour_of(now - timedelta(hours=23))


# ---------------------------------------------------------------------------------------------
# One cursor's path.


@dataclass
class StoryStep:
    index: int
    at: datetime
    kind: str
    title: str
    result: str = ""
    line: int | None = None
    code: str = ""
    email: Any = None  # the outbox row the step wrote, if any
    until: datetime | None = None  # a wait: when it ends
    version: str = ""  # the pushed version whose flow performed it


@dataclass
class Story:
    steps: list[StoryStep]
    waiting: str  # what the cursor waits for now, "" once it ended
    due_at: datetime | None
    runs_on: str = ""  # whose flow it runs: the live version's, or an old one a push kept


def cursor_story(cursor: Cursor, flow: Flow | None = None) -> Story:
    """The cursor's steps, oldest first, each with what it did and the line of code that
    yielded it, and what the cursor waits for now."""
    from delivery.models import OutboxEmail

    records = list(cursor.steps.order_by("index"))
    history = [RecordedStep(s.kind, s.args, s.result, s.user_snapshot) for s in records]
    emails = {
        row.step_index: row
        for row in OutboxEmail.objects.filter(cursor_id=cursor.pk).only(
            "pk", "step_index", "status", "subject", "to_address", "reason", "template_name"
        )
    }
    steps = []
    described: dict[int | None, str] = {}
    for position, record in enumerate(records):
        step = StoryStep(record.index, record.created_at, record.kind, "")
        if record.config_version not in described:
            described[record.config_version] = describe_version(record.config_version)
        step.version = described[record.config_version]
        if record.kind == "send_email":
            template = record.args.get("template", "")
            step.email = emails.get(record.index)
            result = record.result or {}
            step.title = f'send "{template}"'
            step.result = result.get("status", "") + (
                f": {result['reason']}" if result.get("reason") else ""
            )
        elif record.kind == "wait":
            seconds = record.args.get("seconds", 0)
            step.title = f"wait {duration(seconds)}"
            step.until = record.created_at + timedelta(seconds=seconds)
        else:
            step.title = describe_record(record.kind, record.args)
            step.result = "" if record.result is None else str(record.result)
        if flow is not None:
            step.line, step.code = source_line(
                flow, cursor.campaign.name, cursor.user_id, history[: position + 1]
            )
        steps.append(step)
    waiting = ""
    if cursor.status == Cursor.Status.ACTIVE:
        waiting = position_label(history)
    if cursor.pinned_version is not None:
        runs_on = (
            f"the flow of {describe_version(cursor.pinned_version)}, kept for it by a push "
            "that changed the flow (on_change='keep_old') until it finishes"
        )
    else:
        runs_on = "the flow of the live version"
    return Story(steps=steps, waiting=waiting, due_at=cursor.due_at, runs_on=runs_on)
