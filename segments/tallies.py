"""What a membership counts for: its segment's size (see segflow/tallies.py).

`segments.services` adds the difference whenever it writes memberships (in the same
transaction); a user's deletion uncounts their memberships (`pre_delete`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from django.db import connection
from django.db.models.signals import pre_delete

from segflow import tallies
from segflow.models import User
from segflow.tallies import Key, Want, key

from .models import SegmentMembership

KINDS = ("members",)


def note_members(change: Mapping[int, int]) -> None:
    """Segments' sizes changed by these numbers (segment id -> members in minus out)."""
    tallies.add({key("members", segment_id): n for segment_id, n in change.items() if n})


def members(segment_ids: list[int] | None = None) -> dict[int, int]:
    """How many members each segment has now (all segments, or those asked for)."""
    if segment_ids is None:
        counts = tallies.read(Want("members"))
    else:
        counts = tallies.read(*(Want("members", str(pk)) for pk in segment_ids))
    sizes = {int(k.owner): n for k, n in counts.items()}
    return {pk: sizes.get(pk, 0) for pk in segment_ids} if segment_ids is not None else sizes


def _user_deleted(sender, instance: User, **kwargs) -> None:
    gone = Counter(
        SegmentMembership.objects.filter(user_id=instance.pk).values_list("segment_id", flat=True)
    )
    note_members({segment_id: -n for segment_id, n in gone.items()})


def recount() -> Counter[Key]:
    counts: Counter[Key] = Counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT segment_id, COUNT(*) FROM segment_memberships GROUP BY segment_id", []
        )
        for segment_id, n in cursor.fetchall():
            counts[key("members", segment_id)] = n
    return counts


def connect() -> None:
    pre_delete.connect(_user_deleted, sender=User, dispatch_uid="segflow-member-tallies-user")
