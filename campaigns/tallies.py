"""What a cursor counts for on the campaign's pages, kept as cursors move (see segflow/tallies.py).

A cursor counts once under its campaign and status (and, while active, its step number), once
under the hour it entered, and, failed or diverged, under its reason and the hour it ended. Every
change to a cursor's status or step adds the difference: new cursors and exits in
`campaigns.audience`, steps in `campaigns.runner` (`note_saved`), anything saved through the
ORM (`Cursor.save`, as a push that ends diverged cursors does) through `post_save`, and a user's
deletion through `pre_delete`.

A split step (`rt.split`) counts once under its campaign, split name and branch, when the runner
records it (`note_steps`): the figures of the campaign page's splits panel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from django.db import connection
from django.db.models.signals import post_init, post_save, pre_delete

from segflow import tallies
from segflow.models import User
from segflow.tallies import Key, key, reason_label

from .models import Cursor, CursorStep
from .steps import Split

KINDS = ("cursors", "cursor_errors", "entries", "cursor_failures", "branches")
ERROR_STATUSES = (Cursor.Status.FAILED, Cursor.Status.DIVERGED)
# The fields a cursor's counts depend on.
FIELDS = ("campaign_id", "status", "step_count", "end_reason", "created_at", "ended_at")


def counted_as(
    campaign_id: int,
    status: str,
    step_count: int,
    end_reason: str,
    created_at: datetime | None,
    ended_at: datetime | None,
) -> list[Key]:
    keys = [
        key("cursors", campaign_id, status, step_count if status == Cursor.Status.ACTIVE else ""),
        key("entries", campaign_id, hour=created_at),
    ]
    if status in ERROR_STATUSES:
        keys.append(key("cursor_errors", campaign_id, status, reason_label(end_reason)))
        keys.append(key("cursor_failures", campaign_id, status, hour=ended_at or created_at))
    return keys


def _state(cursor: Cursor) -> tuple | None:
    if cursor.get_deferred_fields() & set(FIELDS):
        return None  # loaded without them (`only`): never counted from memory
    return tuple(getattr(cursor, name) for name in FIELDS)


def _remember(sender, instance: Cursor, **kwargs) -> None:
    instance._counted_state = _state(instance) if instance.pk else None


def _saved(sender, instance: Cursor, created: bool, raw: bool = False, **kwargs) -> None:
    note_saved([instance], created=created)


def note_saved(cursors: Iterable[Cursor], created: bool = False) -> None:
    """Count what saving these cursors changed: from the state they were loaded (or last
    counted) in, to their state now. Call it in the transaction that saved them."""
    change: Counter[Key] = Counter()
    for cursor in cursors:
        now = _state(cursor)
        before = None if created else getattr(cursor, "_counted_state", None)
        if now is None or (before is None and not created):
            continue
        if before != now:
            change.update(
                tallies.difference(counted_as(*before) if before else [], counted_as(*now))
            )
        cursor._counted_state = now
    tallies.add(change)


def note_entered(campaign_id: int, count: int, now: datetime) -> None:
    """`count` new cursors entered the campaign at `now`, active and at step 0."""
    if count:
        tallies.add(
            Counter({k: count for k in counted_as(campaign_id, "active", 0, "", now, None)})
        )


def note_ended(campaign_id: int, status: str, steps: Counter[int], now: datetime) -> None:
    """Active cursors left their steps (`steps`: how many from each) and ended as `status`."""
    change: Counter[Key] = Counter()
    for step, count in steps.items():
        change[key("cursors", campaign_id, Cursor.Status.ACTIVE, step)] -= count
        change[key("cursors", campaign_id, status)] += count
    tallies.add(change)


def branch_key(campaign_id: int, args: dict, branch: object) -> Key:
    """What a recorded split step counts for: its campaign, split name and branch."""
    return key("branches", campaign_id, (args or {}).get("name", ""), branch)


def note_steps(steps: Iterable[CursorStep]) -> None:
    """Count the split steps among these new step records, in the transaction that inserts
    them."""
    tallies.add(
        Counter(
            branch_key(step.cursor.campaign_id, step.args, step.result)
            for step in steps
            if step.kind == Split.kind
        )
    )


def _user_deleted(sender, instance: User, **kwargs) -> None:
    """A user's cursors go with them: uncount them (their rows are still there, locked)."""
    change: Counter[Key] = Counter()
    for row in Cursor.objects.filter(user_id=instance.pk).values_list(*FIELDS):
        change.update(tallies.difference(counted_as(*row), []))
    for campaign_id, args, branch in CursorStep.objects.filter(
        cursor__user_id=instance.pk, kind=Split.kind
    ).values_list("cursor__campaign_id", "args", "result"):
        change[branch_key(campaign_id, args, branch)] -= 1
    tallies.add(change)


def recount() -> Counter[Key]:
    """Every cursor's counts, from the table: what the tallies of KINDS must equal."""
    counts: Counter[Key] = Counter()
    hour = _hour_sql
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT campaign_id, status, CASE WHEN status = %s THEN step_count ELSE -1 END, "
            f"{hour('created_at')}, COUNT(*) FROM campaign_cursors GROUP BY 1, 2, 3, 4",
            [Cursor.Status.ACTIVE],
        )
        for campaign_id, status, step, created_hour, n in cursor.fetchall():
            counts[key("cursors", campaign_id, status, "" if step == -1 else step)] += n
            counts[key("entries", campaign_id, hour=tallies._as_datetime(created_hour))] += n
        cursor.execute(
            "SELECT campaign_id, status, end_reason, "
            f"{hour('COALESCE(ended_at, created_at)')}, COUNT(*) FROM campaign_cursors "
            "WHERE status IN (%s, %s) GROUP BY 1, 2, 3, 4",
            list(ERROR_STATUSES),
        )
        for campaign_id, status, reason, ended_hour, n in cursor.fetchall():
            counts[key("cursor_errors", campaign_id, status, reason_label(reason))] += n
            when = tallies._as_datetime(ended_hour)
            counts[key("cursor_failures", campaign_id, status, hour=when)] += n
    # Splits are few per cursor and their names live in JSON: counted here, not in SQL.
    splits = CursorStep.objects.filter(kind=Split.kind).values_list(
        "cursor__campaign_id", "args", "result"
    )
    for campaign_id, args, branch in splits.iterator(chunk_size=5000):
        counts[branch_key(campaign_id, args, branch)] += 1
    return counts


def _hour_sql(column: str) -> str:
    if connection.vendor == "mysql":
        return f"DATE_FORMAT({column}, '%%Y-%%m-%%d %%H:00:00')"
    return f"strftime('%%Y-%%m-%%d %%H:00:00', {column})"


def connect() -> None:
    post_init.connect(_remember, sender=Cursor, dispatch_uid="segflow-cursor-tallies-init")
    post_save.connect(_saved, sender=Cursor, dispatch_uid="segflow-cursor-tallies-save")
    pre_delete.connect(_user_deleted, sender=User, dispatch_uid="segflow-cursor-tallies-user")
