"""Who may be emailed: suppressed addresses get nothing, unsubscribed users get no campaigns,
and a user who had the frequency cap's number of campaign emails gets no more for a while."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from django.db.models import Count

from segflow.addresses import normalize_address
from segflow.config import FrequencyCapDef

from .models import OutboxEmail, Suppression, Unsubscription

__all__ = ["FrequencyCaps", "block_reason", "block_reasons", "normalize_address", "suppress"]

# The campaign emails that count against the cap: those the provider has or will have.
CAPPED_STATUSES = (
    OutboxEmail.Status.QUEUED,
    OutboxEmail.Status.SENDING,
    OutboxEmail.Status.SENT,
    OutboxEmail.Status.UNKNOWN,
)


def block_reason(user_id: str, address: str, *, campaign: bool) -> str:
    """Why no email may go to `address` (of user `user_id`) now, or "" if it may."""
    reasons = block_reasons([(user_id, address)], campaign=campaign)
    return reasons.get((user_id, normalize_address(address)), "")


def block_reasons(
    recipients: list[tuple[str, str]], *, campaign: bool
) -> dict[tuple[str, str], str]:
    """For many (user id, address) pairs at once, in two queries: why no email may go to each.

    Keyed by (user id, normalized address); pairs that may be emailed are not in the answer.
    """
    pairs = {(user_id, normalize_address(address)): address for user_id, address in recipients}
    reasons: dict[tuple[str, str], str] = {}
    if campaign:
        unsubscribed = {
            u.user_id: u
            for u in Unsubscription.objects.filter(user_id__in={user for user, _ in pairs})
        }
        for user_id, normalized in pairs:
            if user_id in unsubscribed:
                reasons[(user_id, normalized)] = (
                    "the user unsubscribed on "
                    f"{unsubscribed[user_id].created_at:%Y-%m-%d %H:%M} UTC; "
                    "campaigns no longer email them"
                )
    suppressed = {
        s.address: s for s in Suppression.objects.filter(address__in={a for _, a in pairs if a})
    }
    for (user_id, normalized), address in pairs.items():
        suppression = suppressed.get(normalized)
        if suppression is not None:
            detail = f": {suppression.detail}" if suppression.detail else ""
            reasons[(user_id, normalized)] = (
                f"{address} is suppressed since {suppression.created_at:%Y-%m-%d %H:%M} UTC "
                f"({suppression.get_reason_display()}{detail}); no email goes to it"
            )
    return reasons


def suppress(
    address: str,
    reason: str,
    *,
    detail: str = "",
    provider: str = "",
    outbox_email_id: int | None = None,
) -> bool:
    """Suppress `address` for all future email. Returns True if it was not suppressed before.

    An `address` that is not one email address suppresses nothing (no email can go to it).
    """
    normalized = normalize_address(address)
    if not normalized:
        return False
    _, created = Suppression.objects.get_or_create(
        address=normalized,
        defaults={
            "reason": reason,
            "detail": detail[:2000],
            "provider": provider,
            "outbox_email_id": outbox_email_id,
        },
    )
    return created


class FrequencyCaps:
    """The config's frequency cap over a batch: how many campaign emails each of its users had
    within the cap's length, read in one query when the batch starts (its users are locked),
    then kept up to date as the batch queues more.

    Counted: campaign emails queued, being sent, sent or of unknown fate, by when they were
    written to the outbox; not skipped or failed ones, transactional emails or test sends. A
    user below the cap at the moment of each email never has more than the cap's number within
    any span of its length."""

    def __init__(self, cap: FrequencyCapDef | None, user_ids: list[str], now: datetime) -> None:
        self.cap = cap
        self.counts: Counter[str] = Counter()
        if cap is None or not user_ids:
            return
        rows = (
            OutboxEmail.objects.filter(
                user_id__in=list(user_ids),
                created_at__gt=now - cap.within,
                status__in=CAPPED_STATUSES,
            )
            .exclude(campaign_name="")
            .exclude(key__startswith="test:")
            .values("user_id")
            .annotate(n=Count("id"))
        )
        self.counts.update({row["user_id"]: row["n"] for row in rows})

    def reason(self, user_id: str) -> str:
        """Why a campaign email to this user must be skipped now, or "" if it may go."""
        if self.cap is not None and self.counts[user_id] >= self.cap.emails:
            return self.cap.reason
        return ""

    def note(self, row: OutboxEmail) -> None:
        """A campaign email was written: count it if it counts."""
        if row.status in CAPPED_STATUSES:
            self.counts[row.user_id] += 1
