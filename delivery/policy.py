"""Who may be emailed: suppressed addresses get nothing, unsubscribed users get no campaigns."""

from __future__ import annotations

from .models import Suppression, Unsubscription


def normalize_address(address: str) -> str:
    return (address or "").strip().lower()


def block_reason(user_id: str, address: str, *, campaign: bool) -> str:
    """Why no email may go to `address` (of user `user_id`) now, or "" if it may."""
    return block_reasons([(user_id, address)], campaign=campaign).get(user_id, "")


def block_reasons(recipients: list[tuple[str, str]], *, campaign: bool) -> dict[str, str]:
    """For many (user id, address) pairs at once, in two queries: why no email may go to each
    user whose address or user is blocked. Users who may be emailed are not in the answer."""
    by_address: dict[str, list[tuple[str, str]]] = {}
    for user_id, address in recipients:
        if normalize_address(address):
            by_address.setdefault(normalize_address(address), []).append((user_id, address))
    reasons: dict[str, str] = {}
    if campaign:
        for unsubscribed in Unsubscription.objects.filter(
            user_id__in=[user_id for user_id, _ in recipients]
        ):
            reasons[unsubscribed.user_id] = (
                f"the user unsubscribed on {unsubscribed.created_at:%Y-%m-%d %H:%M} UTC; "
                "campaigns no longer email them"
            )
    for suppression in Suppression.objects.filter(address__in=list(by_address)):
        detail = f": {suppression.detail}" if suppression.detail else ""
        for user_id, address in by_address[suppression.address]:
            reasons[user_id] = (
                f"{address} is suppressed since "
                f"{suppression.created_at:%Y-%m-%d %H:%M} UTC "
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
