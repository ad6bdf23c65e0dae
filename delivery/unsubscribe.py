"""Unsubscribe links: signed tokens, the List-Unsubscribe headers, and unsubscribing a user.

A token is the user's id and the key of the email it came in, signed with SECRET_KEY (Django's
signing, with its own salt). It does not expire: a link in an old email must keep working. To
rotate SECRET_KEY without breaking the links already sent, keep the old key in
SECRET_KEY_FALLBACKS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse

from segflow.db import lock_user
from segflow.users import UserNotFound, record_event

from .models import OutboxEmail, Unsubscription

logger = logging.getLogger(__name__)

SALT = "segflow.delivery.unsubscribe"
EVENT_NAME = "unsubscribed"


class BadToken(Exception):
    """The token was not made by this segflow (changed, cut short, or signed with another key)."""


@dataclass(frozen=True)
class UnsubscribeRequest:
    user_id: str
    outbox_key: str


def make_token(user_id: str, outbox_key: str) -> str:
    return signing.dumps({"u": user_id, "k": outbox_key}, salt=SALT, compress=True)


def read_token(token: str) -> UnsubscribeRequest:
    try:
        data = signing.loads(token, salt=SALT)
    except signing.BadSignature as exc:
        raise BadToken(str(exc)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        raise BadToken("the token holds no user")
    return UnsubscribeRequest(user_id=data["u"], outbox_key=str(data.get("k", "")))


def unsubscribe_url(user_id: str, outbox_key: str) -> str:
    """The absolute unsubscribe link for a user, as sent in the email `outbox_key` names."""
    path = reverse("delivery:unsubscribe", args=[make_token(user_id, outbox_key)])
    return f"{settings.SEGFLOW_PUBLIC_URL}{path}"


def list_unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 2369's List-Unsubscribe with RFC 8058's one-click POST."""
    return {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def unsubscribe(user_id: str, method: str, outbox_key: str = "") -> bool:
    """Unsubscribe the user from campaigns and record an `unsubscribed` event on them.

    Returns True the first time; unsubscribing again changes nothing and records nothing.
    Raises UserNotFound for a user who no longer exists.
    """
    with transaction.atomic():
        user = lock_user(user_id)
        if user is None:
            raise UserNotFound(user_id)
        email = (
            OutboxEmail.objects.filter(key=outbox_key, user_id=user_id).first()
            if outbox_key
            else None
        )
        _, created = Unsubscription.objects.get_or_create(
            user=user, defaults={"method": method, "outbox_email": email}
        )
        if not created:
            return False
        attributes = {"method": method}
        if email is not None:
            attributes.update(
                {
                    "outbox_id": email.pk,
                    "template": email.template_name,
                    "campaign": email.campaign_name,
                }
            )
        record_event(user_id, EVENT_NAME, {k: v for k, v in attributes.items() if v != ""})
    logger.info("user %s unsubscribed (%s)", user_id, method)
    return True
