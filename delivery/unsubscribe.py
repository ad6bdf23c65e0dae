"""Unsubscribe links: signed tokens, the List-Unsubscribe headers, and unsubscribing a user.

A token names the email it came in, not the person: it is the email's outbox key (which says
which campaign step sent it) and a keyed hash of the user's id, signed with SECRET_KEY (Django's
signing, with its own salt), so a link that is forwarded, logged or shown in a browser's history
does not tell whose it is. The user is found through the outbox row, and the hash must match that
row's user. Tokens made before this format held the user's id itself (`{"u": ..., "k": ...}`);
they are still read, so links in emails already sent keep working.

A token does not expire: a link in an old email must keep working. To rotate SECRET_KEY without
breaking the links already sent, keep the old key in SECRET_KEY_FALLBACKS.

Opening the link (GET) only shows a page with a button: mail scanners fetch links. The button,
and the mail client's RFC 8058 one-click request, POST to the same link, and that unsubscribes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from segflow.db import lock_user
from segflow.models import User
from segflow.users import UserNotFound, record_event

from .models import OutboxEmail, Unsubscription

logger = logging.getLogger(__name__)

SALT = "segflow.delivery.unsubscribe"
USER_CHECK_SALT = "segflow.delivery.unsubscribe.user"
EVENT_NAME = "unsubscribed"
# The body of RFC 8058's one-click POST.
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"


class BadToken(Exception):
    """The token was not made by this segflow (changed, cut short, or signed with another key)."""


class PreviewLink(Exception):
    """The link of an email rendered by `segflow_preview`: it shows the page, and unsubscribes
    nobody (a preview is looked at by the team, not sent)."""


PREVIEW_KEY_PREFIX = "preview:"


@dataclass(frozen=True)
class UnsubscribeRequest:
    user_id: str
    outbox_key: str


def make_token(user_id: str, outbox_key: str) -> str:
    """The token of the link in the email `outbox_key` names, sent to user `user_id`."""
    return signing.dumps({"o": outbox_key, "h": _user_check(user_id)}, salt=SALT)


def _user_check(user_id: str, secret: str | None = None) -> str:
    """A keyed hash of the user id: binds a token to its user without showing who it is."""
    digest = salted_hmac(USER_CHECK_SALT, user_id, secret=secret, algorithm="sha256")
    return digest.hexdigest()[:20]


def _user_check_matches(user_id: str, check: object) -> bool:
    if not isinstance(check, str):
        return False
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(constant_time_compare(_user_check(user_id, secret), check) for secret in secrets)


def read_token(token: str) -> UnsubscribeRequest:
    """The user and the email a token names.

    Raises BadToken for a token this segflow did not sign, UserNotFound when the email or the
    user it names is gone (the user was deleted) or is not the one it was made for, and
    PreviewLink for the link of a preview.
    """
    try:
        data = signing.loads(token, salt=SALT)
    except signing.BadSignature as exc:
        raise BadToken(str(exc)) from exc
    if not isinstance(data, dict):
        raise BadToken("the token holds no email")
    if isinstance(data.get("u"), str):  # the earlier format: the user's id itself
        wanted = UnsubscribeRequest(user_id=data["u"], outbox_key=str(data.get("k", "")))
    elif isinstance(data.get("o"), str):
        user_id = (
            OutboxEmail.objects.filter(key=data["o"]).values_list("user_id", flat=True).first()
        )
        if user_id is None and data["o"].startswith(PREVIEW_KEY_PREFIX):
            raise PreviewLink(data["o"])
        if user_id is None or not _user_check_matches(user_id, data.get("h")):
            raise UserNotFound(data["o"])
        wanted = UnsubscribeRequest(user_id=user_id, outbox_key=data["o"])
    else:
        raise BadToken("the token holds no email")
    if not User.objects.filter(pk=wanted.user_id).exists():
        raise UserNotFound(wanted.user_id)
    return wanted


def is_unsubscribed(user_id: str) -> bool:
    return Unsubscription.objects.filter(user_id=user_id).exists()


def is_one_click(form) -> bool:
    """Whether a POST's form is RFC 8058's `List-Unsubscribe=One-Click`."""
    return form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE


def unsubscribe_url(user_id: str, outbox_key: str) -> str:
    """The absolute unsubscribe link for a user, as sent in the email `outbox_key` names."""
    token = make_token(user_id, outbox_key)
    if _URL_SAFE.fullmatch(token):
        head, tail = _path_around_token(get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)
        path = f"{head}{token}{tail}"
    else:
        path = reverse("delivery:unsubscribe", args=[token])
    return f"{settings.SEGFLOW_PUBLIC_URL}{path}"


# What a signed token is made of (URL-safe base64 and its separator): reverse() leaves these as
# they are, so the link is the same text with the token put in place.
_URL_SAFE = re.compile(r"[A-Za-z0-9_:-]+")
_MARKER = "segflow-unsubscribe-token"


@lru_cache(maxsize=16)
def _path_around_token(script_prefix: str, urlconf: str) -> tuple[str, str]:
    """The unsubscribe path before and after its token. reverse() matches and quotes the token on
    every call: 57 microseconds, most of what a campaign email's link cost a worker."""
    head, _, tail = reverse("delivery:unsubscribe", args=[_MARKER], urlconf=urlconf).rpartition(
        _MARKER
    )
    return head, tail


def list_unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 2369's List-Unsubscribe with RFC 8058's one-click POST."""
    return {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": f"{ONE_CLICK_FIELD}={ONE_CLICK_VALUE}",
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
