"""Who may be emailed: suppressed addresses get nothing, unsubscribed users get no campaigns."""

from __future__ import annotations

from .models import Suppression, Unsubscription


def normalize_address(address: str) -> str:
    return (address or "").strip().lower()


def block_reason(user_id: str, address: str, *, campaign: bool) -> str:
    """Why no email may go to `address` (of user `user_id`) now, or "" if it may."""
    suppression = Suppression.objects.filter(address=normalize_address(address)).first()
    if suppression is not None:
        detail = f": {suppression.detail}" if suppression.detail else ""
        return (
            f"{address} is suppressed since {suppression.created_at:%Y-%m-%d %H:%M} UTC "
            f"({suppression.get_reason_display()}{detail}); no email goes to it"
        )
    if campaign:
        unsubscribed = Unsubscription.objects.filter(user_id=user_id).first()
        if unsubscribed is not None:
            return (
                f"the user unsubscribed on {unsubscribed.created_at:%Y-%m-%d %H:%M} UTC; "
                "campaigns no longer email them"
            )
    return ""


def suppress(
    address: str,
    reason: str,
    *,
    detail: str = "",
    provider: str = "",
    outbox_email_id: int | None = None,
) -> bool:
    """Suppress `address` for all future email. Returns True if it was not suppressed before."""
    _, created = Suppression.objects.get_or_create(
        address=normalize_address(address),
        defaults={
            "reason": reason,
            "detail": detail[:2000],
            "provider": provider,
            "outbox_email_id": outbox_email_id,
        },
    )
    return created
