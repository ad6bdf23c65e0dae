"""Who is in a campaign: entering the users of its audience, and ending cursors that must end.

The audience of a campaign is the users in all of its segments and in none of its excluded ones,
read from segment memberships. Entering and exiting are set-based statements over that audience,
for everyone, for one user, or for a range of user ids.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Count

from segflow.db import insert_ignore, placeholders
from segments.models import Segment
from segments.services import IdRange, range_condition

from . import tallies
from .models import Campaign, Cursor


def _audience_sql(
    campaign: Campaign,
    segment_ids: dict[str, int],
    user_ids: list[str] | None,
    id_range: IdRange | None = None,
):
    include = [segment_ids[name] for name in campaign.segments]
    exclude = [segment_ids[name] for name in campaign.exclude_segments]
    sql = (
        "SELECT m.user_id FROM segment_memberships m "
        f"WHERE m.segment_id IN ({placeholders(include)})"
    )
    params: list = list(include)
    if user_ids is not None:
        sql += f" AND m.user_id IN ({placeholders(user_ids)})"
        params += user_ids
    if id_range is not None:
        in_range, range_params = range_condition("m.user_id", id_range)
        sql += in_range
        params += range_params
    if exclude:
        sql += (
            " AND NOT EXISTS (SELECT 1 FROM segment_memberships x WHERE x.user_id = m.user_id "
            f"AND x.segment_id IN ({placeholders(exclude)}))"
        )
        params += exclude
    sql += " GROUP BY m.user_id HAVING COUNT(*) = %s"
    params.append(len(include))
    return sql, params


def _segment_ids() -> dict[str, int]:
    return dict(Segment.objects.values_list("name", "id"))


@dataclass(frozen=True)
class AudienceChange:
    entered: int
    exited: int


def reconcile_campaign(
    campaign: Campaign,
    now: datetime,
    user_id: str | None = None,
    id_range: IdRange | None = None,
    *,
    user_ids: list[str] | None = None,
    segment_ids: dict[str, int] | None = None,
) -> AudienceChange:
    """Enter the audience's users who have no place in the campaign; in a dynamic campaign, end
    the cursors of users who left it and let finished ones back in later.

    Everyone, only `user_id` (or `user_ids`), or the users in `id_range`. New cursors are due at
    once. `segment_ids` (name to id), when the caller has read them already.
    """
    if not campaign.active:
        return AudienceChange(0, 0)
    if user_id is not None:
        user_ids = [user_id]
    if user_ids is not None and not user_ids:
        return AudienceChange(0, 0)
    segment_ids = segment_ids if segment_ids is not None else _segment_ids()
    audience, audience_params = _audience_sql(campaign, segment_ids, user_ids, id_range)
    stamp = connection.ops.adapt_datetimefield_value(now)
    user_filter, user_params = (
        (f" AND user_id IN ({placeholders(user_ids)})", list(user_ids))
        if user_ids is not None
        else ("", [])
    )
    if id_range is not None:
        in_range, range_params = range_condition("user_id", id_range)
        user_filter, user_params = user_filter + in_range, user_params + range_params
    exited = 0
    with connection.cursor() as cursor:
        if campaign.behavior == Campaign.Behavior.DYNAMIC:
            # The leavers are read (and locked) first, so that their steps are counted exactly.
            cursor.execute(
                "SELECT id, step_count FROM campaign_cursors "
                f"WHERE campaign_id = %s AND status = %s{user_filter} "
                f"AND user_id NOT IN ({audience})"
                + (" FOR UPDATE" if connection.features.has_select_for_update else ""),
                [campaign.pk, Cursor.Status.ACTIVE, *user_params, *audience_params],
            )
            leaving = cursor.fetchall()
            for start in range(0, len(leaving), 1000):
                ids = [cursor_id for cursor_id, _ in leaving[start : start + 1000]]
                cursor.execute(
                    "UPDATE campaign_cursors SET status = %s, entry_key = NULL, due_at = NULL, "
                    "ended_at = %s, updated_at = %s, end_reason = %s "
                    f"WHERE id IN ({placeholders(ids)}) AND status = %s",
                    [
                        Cursor.Status.EXITED,
                        stamp,
                        stamp,
                        "the user no longer matches the campaign's segments",
                        *ids,
                        Cursor.Status.ACTIVE,
                    ],
                )
            exited = len(leaving)
            tallies.note_ended(
                campaign.pk, Cursor.Status.EXITED, Counter(step for _, step in leaving), now
            )
            cursor.execute(
                "UPDATE campaign_cursors SET entry_key = NULL, updated_at = %s "
                f"WHERE campaign_id = %s AND status <> %s AND entry_key IS NOT NULL{user_filter} "
                f"AND user_id NOT IN ({audience})",
                [stamp, campaign.pk, Cursor.Status.ACTIVE, *user_params, *audience_params],
            )
        cursor.execute(
            f"{insert_ignore()} INTO campaign_cursors (campaign_id, user_id, status, entry_key, "
            "step_count, due_at, created_at, updated_at, end_reason, error) "
            f"SELECT %s, a.user_id, %s, a.user_id, 0, %s, %s, %s, '', '' FROM ({audience}) a "
            "WHERE NOT EXISTS (SELECT 1 FROM campaign_cursors c "
            "WHERE c.campaign_id = %s AND c.entry_key = a.user_id)",
            [campaign.pk, Cursor.Status.ACTIVE, stamp, stamp, stamp, *audience_params, campaign.pk],
        )
        entered = max(cursor.rowcount, 0)
    tallies.note_entered(campaign.pk, entered, now)
    return AudienceChange(entered=entered, exited=exited)


def reconcile_users(changed: dict[str, set[int]], now: datetime) -> None:
    """Bring the campaigns up to date for users whose segments changed (user id to the ids of
    the segments they entered or left): one reconcile per campaign for all its users."""
    if not changed:
        return
    segment_ids = _segment_ids()
    names = {pk: name for name, pk in segment_ids.items()}
    for campaign in Campaign.objects.filter(active=True).order_by("pk"):
        used = set(campaign.segments) | set(campaign.exclude_segments)
        users = sorted(
            user_id for user_id, ids in changed.items() if any(names.get(pk) in used for pk in ids)
        )
        if users:
            reconcile_campaign(campaign, now, user_ids=users, segment_ids=segment_ids)


def campaigns_using(segment_ids: set[int]) -> list[Campaign]:
    """Active campaigns whose segments or excluded segments include any of `segment_ids`."""
    names = set(Segment.objects.filter(pk__in=segment_ids).values_list("name", flat=True))
    return [
        c
        for c in Campaign.objects.filter(active=True)
        if names & (set(c.segments) | set(c.exclude_segments))
    ]


def end_campaign(campaign: Campaign, now: datetime, reason: str) -> int:
    """Deactivate a campaign and end its active cursors. Returns how many ended."""
    ended = Cursor.objects.filter(campaign=campaign, status=Cursor.Status.ACTIVE).update(
        status=Cursor.Status.ENDED,
        entry_key=None,
        due_at=None,
        ended_at=now,
        updated_at=now,
        end_reason=reason,
    )
    if ended:
        steps = Cursor.objects.filter(campaign=campaign, status=Cursor.Status.ENDED, ended_at=now)
        tallies.note_ended(
            campaign.pk,
            Cursor.Status.ENDED,
            Counter(dict(steps.values_list("step_count").annotate(n=Count("id")))),
            now,
        )
    # Finished cursors let go too: a campaign pushed again under this name starts afresh.
    Cursor.objects.filter(campaign=campaign, entry_key__isnull=False).update(entry_key=None)
    Campaign.objects.filter(pk=campaign.pk).update(active=False, removed_at=now, updated_at=now)
    return ended
