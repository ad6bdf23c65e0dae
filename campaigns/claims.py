"""Who is due: claiming cursors for running, with leases so each is handed out once at a time.

A claim sets `claimed_until`; until then no other claimer takes the cursor, and once it passes
(its worker died) the cursor is handed out again. The runner clears the claim when it has run,
and whoever claimed cursors but could not hand them out (the broker was down) releases them, so
that the next tick claims them again instead of waiting out the lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When

from segflow.db import update_through_index

from .models import Cursor


def claim_due_cursors(now: datetime, limit: int = 500) -> list[int]:
    """Claim up to `limit` due cursors for running now; return their ids.

    Row locks that skip rows other claimers hold (MySQL 8, MariaDB 10.6+) let any number of
    schedulers claim at once without handing out a cursor twice; a claim lasts
    SEGFLOW_CLAIM_LEASE_SECONDS, so a cursor whose worker died is handed out again after it.
    """
    lease = timedelta(seconds=settings.SEGFLOW_CLAIM_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            Cursor.objects.select_for_update(skip_locked=True)
            .filter(status=Cursor.Status.ACTIVE, due_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("due_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            update_through_index(
                Cursor.objects.filter(pk__in=ids), "PRIMARY", claimed_until=now + lease
            )
    return ids


def claim_new_cursors(user_ids: list[str], now: datetime) -> list[int]:
    """Claim the users' cursors that have not run a step yet and nobody holds, to start them now
    (claimed, so the schedule's next tick does not hand them out a second time).

    A new cursor is due at once, unless its first email is waiting for the user's address (see
    `campaigns.runner`): a change to the user is the moment to try that again, so it is made due
    now too."""
    return _claim_to_run_now(now, user_id__among=user_ids, step_count=0)


def claim_woken(cursor_ids: list[int], now: datetime) -> list[int]:
    """Claim the cursors an event just made due, those nobody holds, to run them now rather than
    at the schedule's next tick."""
    return _claim_to_run_now(now, pk__in=cursor_ids) if cursor_ids else []


def _claim_to_run_now(now: datetime, **which) -> list[int]:
    """Claim the active cursors `which` selects that nobody holds, and make them due now."""
    unclaimed = Cursor.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        status=Cursor.Status.ACTIVE,
        **which,
    )
    ids = list(unclaimed.values_list("pk", flat=True))
    if ids:
        lease = timedelta(seconds=settings.SEGFLOW_CLAIM_LEASE_SECONDS)
        update_through_index(
            Cursor.objects.filter(pk__in=ids),
            "PRIMARY",
            claimed_until=now + lease,
            due_at=Case(When(due_at__gt=now, then=Value(now)), default=F("due_at")),
        )
    return ids


def release(cursor_ids: list[int]) -> None:
    """Give up the claims on cursors that could not be handed out, so the next tick claims them
    again at once. (A cursor that ran meanwhile has no claim left; this changes nothing then.)"""
    if cursor_ids:
        unreleased = Cursor.objects.filter(pk__in=cursor_ids, claimed_until__isnull=False)
        update_through_index(unreleased, "PRIMARY", claimed_until=None)
