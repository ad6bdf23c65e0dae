"""A segment's past: who entered and left it when (`MembershipHistory`), and how big it was
(`SegmentSnapshot`): written where memberships are written (`segments.services`), read by the
admin's segment and user pages."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from . import tallies
from .models import MembershipHistory, Segment, SegmentSnapshot


def note_changes(changes: dict, names: dict[int, str], now: datetime) -> None:
    """Keep the history of what `evaluate_users` changed ({user id: MembershipChange}), and
    count it."""
    rows, sizes = [], Counter()
    for user_id, change in changes.items():
        for segment_id, entered in [(s, True) for s in change.entered] + [
            (s, False) for s in change.left
        ]:
            rows.append(
                MembershipHistory(
                    segment_id=segment_id,
                    segment_name=names.get(segment_id, ""),
                    user_id=user_id,
                    entered=entered,
                    at=now,
                )
            )
            sizes[segment_id] += 1 if entered else -1
    if rows:
        MembershipHistory.objects.bulk_create(rows)
    tallies.note_members(sizes)


def log_leavers(segment: Segment, ids_table: str, now) -> None:
    """`refresh_segment` is about to delete the members whose ids are in `ids_table`: note them."""
    _log(segment, ids_table, False, now)


def log_newcomers(segment: Segment, ids_table: str, now) -> None:
    """`refresh_segment` is about to insert the users whose ids are in `ids_table`: note them."""
    _log(segment, ids_table, True, now)


def _log(segment: Segment, ids_table: str, entered: bool, now) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO segment_membership_changes (segment_id, segment_name, user_id, entered, "
            f"at) SELECT %s, %s, id, %s, %s FROM {ids_table}",
            [segment.pk, segment.name, entered, _stamp(now)],
        )


def _stamp(now: datetime):
    return connection.ops.adapt_datetimefield_value(now)


def snapshot(
    segment: Segment,
    occasion: str,
    now: datetime,
    *,
    entered: int = 0,
    left: int = 0,
    seconds: float | None = None,
) -> SegmentSnapshot:
    """Keep the segment's size now (counted, not scanned)."""
    return SegmentSnapshot.objects.create(
        segment=segment,
        at=now,
        occasion=occasion,
        members=tallies.members([segment.pk])[segment.pk],
        entered=entered,
        left=left,
        seconds=seconds,
    )


def snapshot_all(now: datetime, occasion: str = SegmentSnapshot.Occasion.HOURLY) -> int:
    """Snapshot every segment's size (the schedule does it hourly and after each push).
    Returns how many."""
    segments = list(Segment.objects.all())
    sizes = tallies.members([s.pk for s in segments])
    SegmentSnapshot.objects.bulk_create(
        SegmentSnapshot(segment=s, at=now, occasion=occasion, members=sizes[s.pk]) for s in segments
    )
    return len(segments)


# ---------------------------------------------------------------------------------------------
# Reads for the admin.


@dataclass(frozen=True)
class Evaluation:
    at: datetime
    occasion: str
    seconds: float | None
    entered: int
    left: int


def last_evaluation(segment: Segment) -> Evaluation | None:
    row = (
        SegmentSnapshot.objects.filter(segment=segment)
        .exclude(occasion=SegmentSnapshot.Occasion.HOURLY)
        .order_by("-at", "-id")
        .first()
    )
    if row is None:
        return None
    return Evaluation(row.at, row.get_occasion_display(), row.seconds, row.entered, row.left)


def size_over_time(segment: Segment, limit: int = 500) -> list[tuple[datetime, int]]:
    """The segment's size at its last `limit` snapshots, oldest first."""
    rows = list(
        SegmentSnapshot.objects.filter(segment=segment)
        .order_by("-at", "-id")
        .values_list("at", "members")[:limit]
    )
    return rows[::-1]
