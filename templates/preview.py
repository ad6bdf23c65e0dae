"""Previewing an email: a template or a transaction rendered for a real user, as it would go out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from segflow.config import Config, EmailContentDef
from segflow.models import Event, User

from .rendering import RenderedEmail, render_email


class PreviewError(Exception):
    """The preview cannot be made; the message names what is missing."""


@dataclass(frozen=True)
class Preview:
    content: EmailContentDef
    user: User
    event: Event | None
    email: RenderedEmail


def preview_email(
    config: Config,
    name: str,
    user_id: str,
    event_id: int | None = None,
    *,
    unsubscribe_url: Callable[[str], str] | None = None,
) -> Preview:
    """Render template (or transaction) `name` for user `user_id`.

    A campaign template gets the unsubscribe link `unsubscribe_url(user_id)` gives, if any. A
    transaction gets the event `event_id`, or else the user's latest event of its name, if any.
    """
    content = config.templates.get(name) or config.transactions.get(name)
    if content is None:
        known = sorted(set(config.templates) | set(config.transactions))
        raise PreviewError(
            f"template: no template or transaction {name!r} in the config "
            f"(known: {', '.join(known) or 'none'})"
        )
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        raise PreviewError(f"user: no user {user_id!r}")
    event = None
    if name in config.transactions and name not in config.templates:
        events = Event.objects.filter(user=user, name=config.transactions[name].event)
        if event_id is not None:
            event = events.filter(pk=event_id).first()
            if event is None:
                raise PreviewError(
                    f"event: user {user_id!r} has no {config.transactions[name].event!r} "
                    f"event {event_id}"
                )
        else:
            event = events.order_by("-created_at", "-id").first()
    unsubscribe = ""
    if name in config.templates and unsubscribe_url is not None:
        unsubscribe = unsubscribe_url(user.pk)
    email = render_email(
        content,
        config.base_dir,
        user,
        event,
        version=config.fingerprint,
        unsubscribe_url=unsubscribe,
    )
    return Preview(content=content, user=user, event=event, email=email)
