"""Transactional emails: one email per event and matching transaction, sent as the event arrives."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings

from delivery.models import OutboxEmail
from delivery.outbox import EmailOrigin, OutboxWriter
from segflow.config import Config
from segflow.models import Event, User

from .models import Transaction

logger = logging.getLogger(__name__)


def send_transactions(
    config: Config, users: dict[str, User], events: list[Event]
) -> list[OutboxEmail]:
    """Queue the email of every pushed transaction listening for each event's name, for a batch
    of events together (their users locked by the caller); delivered after commit.

    An event that happened long before it arrived (a backfill: its `timestamp` more than
    SEGFLOW_TRANSACTION_MAX_AGE_SECONDS before its `created_at`) sends nothing: an import of last
    year's purchases must not confirm them now. Late processing of a fresh event does not count.
    """
    events = _recent(config, events)
    names = {event.name for event in events}
    definitions = {name: config.transactions_for_event(name) for name in names}
    wanted = [d.name for ds in definitions.values() for d in ds]
    if not wanted:
        return []
    pushed = set(
        Transaction.objects.filter(event__in=names, name__in=wanted).values_list("name", flat=True)
    )
    sending = [
        (definition, event, EmailOrigin.transaction_event(definition.name, event))
        for event in events
        for definition in definitions[event.name]
        if definition.name in pushed
    ]
    if not sending:
        return []
    # The rows stored before are looked up by their unique keys: by event id, a few hundred ids
    # made MariaDB estimate from its statistics and read the whole outbox for each batch.
    emails = OutboxWriter(
        config,
        list({event.user_id: users[event.user_id] for _, event, _ in sending}.values()),
        keys=[origin.key for _, _, origin in sending],
        campaign=False,
    )
    rows = [
        emails.queue(definition, users[event.user_id], origin)
        for definition, event, origin in sending
    ]
    emails.deliver_after_commit()
    return rows


def _recent(config: Config, events: list[Event]) -> list[Event]:
    max_age = timedelta(seconds=settings.SEGFLOW_TRANSACTION_MAX_AGE_SECONDS)
    recent = [event for event in events if event.created_at - event.timestamp <= max_age]
    if len(recent) < len(events):
        old = [event for event in events if event.created_at - event.timestamp > max_age]
        listened = [event for event in old if config.transactions_for_event(event.name)]
        if listened:
            logger.info(
                "no transactional email for %s event(s) that happened more than %s s before "
                "they arrived (SEGFLOW_TRANSACTION_MAX_AGE_SECONDS)",
                len(listened),
                settings.SEGFLOW_TRANSACTION_MAX_AGE_SECONDS,
            )
    return recent
