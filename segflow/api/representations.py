"""What the API returns for users and events."""

from typing import Any

from campaigns.models import Cursor
from segflow.models import Event, User
from segments.models import SegmentMembership


def user_representation(user: User) -> dict[str, Any]:
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


def event_representation(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "user_id": event.user_id,
        "name": event.name,
        "attributes": event.attributes,
        "created_at": event.created_at,
    }
