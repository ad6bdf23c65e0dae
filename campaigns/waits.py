"""What processed events do to cursors: a goal converts, a wait for the event is woken.

`segflow.pipeline` calls `events_processed` once per batch of events, in the batch's
transaction, with the batch's users locked: the runner takes the same locks, so a cursor is
either still waiting when its event is processed (and is made due now) or began its wait after
it (and the event is not one it waits for). Waking only makes the cursor due: the runner, when
it claims the cursor, finds the event itself (see `campaigns.steps.WaitForEvent`), so an event
resumes a wait once however often it wakes it.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime

from django.db.models import F

from segflow.config import Config
from segflow.db import update_through_index
from segflow.models import Event

from . import tallies
from .models import Campaign, Cursor, CursorStep
from .steps import WaitForEvent

logger = logging.getLogger(__name__)


def events_processed(config: Config, events: Iterable[Event], now: datetime) -> list[int]:
    """The users' active cursors in campaigns whose goal is one of these events end as
    converted; the others waiting for one of these events are made due now (their ids are
    returned, for the caller to hand out at once)."""
    names_by_user: dict[str, set[str]] = defaultdict(set)
    for event in events:
        names_by_user[event.user_id].add(event.name)
    if not names_by_user:
        return []
    convert_goal_reached(config, names_by_user, now)
    return wake_waiting(names_by_user, now)


def convert_goal_reached(config: Config, names_by_user: dict[str, set[str]], now: datetime) -> int:
    """End as converted the active cursors of users who did their campaign's goal event.
    Returns how many."""
    goals = {d.name: d.goal for d in config.campaigns.values() if d.goal}
    if not goals:
        return 0
    converted = 0
    for campaign in Campaign.objects.filter(name__in=list(goals), active=True):
        goal = goals[campaign.name]
        users = [user for user, names in names_by_user.items() if goal in names]
        if not users:
            continue
        # Locked first, so that their steps are counted exactly (a segment's refresh may be
        # ending some of them at this moment).
        rows = list(
            Cursor.objects.select_for_update()
            .filter(campaign=campaign, user_id__among=users, status=Cursor.Status.ACTIVE)
            .order_by("pk")
            .values_list("pk", "step_count")
        )
        if not rows:
            continue
        # A converted cursor keeps the user's place, as a completed one does: no entering again
        # (in a dynamic campaign, until they leave the audience).
        count = update_through_index(
            Cursor.objects.filter(pk__in=[pk for pk, _ in rows], status=Cursor.Status.ACTIVE),
            "PRIMARY",
            status=Cursor.Status.CONVERTED,
            due_at=None,
            ended_at=now,
            updated_at=now,
            end_reason=f"reached the goal: {goal}",
        )
        steps = Counter(step for _, step in rows)
        tallies.note_ended(campaign.pk, Cursor.Status.CONVERTED, steps, now)
        converted += count
    return converted


def wake_waiting(names_by_user: dict[str, set[str]], now: datetime) -> list[int]:
    """Make due now the users' active cursors waiting for one of the events they did.
    Returns their ids."""
    waiting = CursorStep.objects.filter(
        cursor__user_id__in=list(names_by_user),
        cursor__status=Cursor.Status.ACTIVE,
        kind=WaitForEvent.kind,
        # The cursor's last step (written so: step_count - 1 overflows an unsigned 0 on MySQL).
        cursor__step_count=F("index") + 1,
    ).values_list("cursor_id", "cursor__user_id", "args", "result")
    woken = [
        cursor_id
        for cursor_id, user_id, args, result in waiting
        if (args or {}).get("event") in names_by_user[user_id]
        and isinstance(result, dict)
        and "waiting" in result  # not resumed yet (WaitForEvent.is_pending)
    ]
    if woken:
        update_through_index(
            Cursor.objects.filter(pk__in=woken, due_at__gt=now),
            "PRIMARY",
            due_at=now,
            updated_at=now,
        )
    return woken
