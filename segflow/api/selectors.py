"""The reads behind the API's answers: a user with their segments and campaigns, their events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from campaigns.models import Cursor
from segflow.models import Event, User
from segflow.users import Recorded
from segments.models import SegmentMembership

from .validation import MAX_ID_LENGTH


def find_user(user_id: str) -> User | None:
    if not user_id or len(user_id) > MAX_ID_LENGTH:
        return None
    return User.objects.filter(pk=user_id).first()


def user_detail(user: User, *, just_created: bool = False) -> dict[str, Any]:
    """The user as the API shows them: attributes, the segments they are in, their campaigns.

    A user `just_created` by this request is in no segment or campaign yet, unless their
    evaluation ran in this process (the embedded default): workers evaluate them after the answer.
    """
    if just_created and not settings.SEGFLOW_TASKS_INLINE:
        segments: Iterable[str] = []
        cursors: Iterable[Cursor] = []
    else:
        segments = (
            SegmentMembership.objects.filter(user=user)
            .order_by("segment__name")
            .values_list("segment__name", flat=True)
        )
        cursors = (
            Cursor.objects.filter(user=user).select_related("campaign").order_by("created_at", "id")
        )
    return {
        "id": user.id,
        "attributes": user.attributes,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "segments": list(segments),
        "campaigns": [
            {
                "campaign": cursor.campaign.name,
                "status": cursor.status,
                "steps_done": cursor.step_count,
                "next_step_at": cursor.due_at,
                "entered_at": cursor.created_at,
                "ended_at": cursor.ended_at,
                "end_reason": cursor.end_reason,
            }
            for cursor in cursors
        ],
    }


def events_of(user_id: str) -> QuerySet[Event]:
    """The user's events, newest first."""
    return Event.objects.filter(user_id=user_id).order_by("-created_at", "-id")


def event_detail(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "user_id": event.user_id,
        "name": event.name,
        "attributes": event.attributes,
        "timestamp": event.timestamp,
        "created_at": event.created_at,
        "message_id": event.message_id,
        "context": event.context,
    }


def recorded_detail(recorded: Recorded) -> dict[str, Any]:
    """A POSTed event as stored; `duplicate`: its message id was stored before, and this is the
    event stored then (nothing was stored or done again)."""
    detail = event_detail(recorded.event)
    detail["duplicate"] = recorded.duplicate
    return detail


def events_answer(recorded: list[Recorded]) -> tuple[int, dict[str, Any]]:
    """The status and body of POST /api/events: 201 when any event was stored, 200 when every
    one was a duplicate."""
    stored_any = any(not r.duplicate for r in recorded)
    return (201 if stored_any else 200), {"events": [recorded_detail(r) for r in recorded]}
