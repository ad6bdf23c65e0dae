"""Who may be emailed: suppressed addresses get nothing, unsubscribed users get no campaigns."""

from __future__ import annotations

from segflow.addresses import normalize_address

from .models import Suppression, Unsubscription

__all__ = ["block_reason", "block_reasons", "normalize_address", "suppress"]


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
