"""Transactional emails: one email per event and matching transaction, sent as the event arrives."""

from __future__ import annotations

from segflow.config import Config
from segflow.models import Event, OutboxEmail, User
from segflow.outbox import EmailOrigin, queue_email

from .models import Transaction


def send_transactions(config: Config, user: User, event: Event) -> list[OutboxEmail]:
    """Queue the email of every pushed transaction listening for this event's name."""
    definitions = config.transactions_for_event(event.name)
    if not definitions:
        return []
    pushed = set(
        Transaction.objects.filter(
            event=event.name, name__in=[d.name for d in definitions]
        ).values_list("name", flat=True)
    )
    return [
        queue_email(config, definition, user, EmailOrigin.transaction_event(definition.name, event))
        for definition in definitions
        if definition.name in pushed
    ]
