"""Tracking webhooks: what the providers tell after sending, turned into events on the user.

anymail's webhook views (Postmark, Amazon SES) check the shared secret, parse the provider's
payload and send its `tracking` signal; `handle_tracking_event` takes it from there:

- finds the outbox row by the provider's message id (or by the outbox id segflow sent along as
  metadata, for a row whose send never got an answer), and only if that email went to the
  event's recipient: a report that matches no email segflow sent changes nothing;
- updates the row (delivered, bounced, complained, first opened, first clicked), and reconciles
  a row in `unknown` to `sent`: the provider has it, so it was sent;
- suppresses the row's address after a hard bounce or a complaint;
- records an event on the user (`email.delivered`, `email.bounced`, `email.deferred`,
  `email.complained`, `email.opened`, `email.clicked`), so segments can use them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType
from django.db import transaction
from django.utils import timezone

from segflow.db import lock_user
from segflow.users import record_event

from . import tallies
from .models import OutboxEmail, Suppression
from .policy import normalize_address, suppress
from .providers import EmailProvider, provider_for_esp
from .unsubscribe import unsubscribe

logger = logging.getLogger(__name__)

# The metadata key that carries the outbox row's id to the provider and back.
OUTBOX_ID_METADATA = "segflow_outbox_id"

# Outcomes that happen once per email: a second report of one (a webhook retried) is ignored.
ONCE = {"delivered": "delivered_at", "bounced": "bounced_at", "complained": "complained_at"}
# Engagement: every open and click is an event; the row keeps the first.
FIRST = {"opened": "opened_at", "clicked": "clicked_at"}


def on_tracking_event(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    handle_tracking_event(event, esp_name)


def outcome_of(event: AnymailTrackingEvent, provider: EmailProvider | None) -> str | None:
    """segflow's name for what happened, or None for what segflow does not track."""
    kind = event.event_type
    if kind in (EventType.BOUNCED, EventType.REJECTED, EventType.DEFERRED):
        permanent = provider is not None and provider.bounce_is_permanent(event.esp_event or {})
        return "bounced" if permanent else "deferred"
    return {
        EventType.DELIVERED: "delivered",
        EventType.COMPLAINED: "complained",
        EventType.OPENED: "opened",
        EventType.CLICKED: "clicked",
        EventType.UNSUBSCRIBED: "unsubscribed",
    }.get(kind)


def find_outbox_row(event: AnymailTrackingEvent) -> OutboxEmail | None:
    """The email segflow sent that `event` reports on: found by the provider's message id, or
    by the outbox id sent along as metadata, and only if it went to the event's recipient."""
    recipient = normalize_address(event.recipient)
    if not recipient:
        return None
    if isinstance(event.message_id, str) and event.message_id:
        row = OutboxEmail.objects.filter(message_id=event.message_id).first()
        if row is not None and normalize_address(row.to_address) == recipient:
            return row
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    outbox_id = str(metadata.get(OUTBOX_ID_METADATA, ""))
    if outbox_id.isascii() and outbox_id.isdigit():
        row = OutboxEmail.objects.filter(pk=int(outbox_id)).first()
        if row is not None and normalize_address(row.to_address) == recipient:
            return row
    return None


def handle_tracking_event(event: AnymailTrackingEvent, esp_name: str) -> str | None:
    """Apply one tracking event. Returns the name of the event recorded on the user, if any."""
    provider = provider_for_esp(esp_name)
    outcome = outcome_of(event, provider)
    if outcome is None:
        logger.info("ignoring %s %s event for %s", esp_name, event.event_type, event.recipient)
        return None
    row = find_outbox_row(event)
    provider_name = provider.name if provider else esp_name
    if row is None:
        # Not an email segflow sent to this address: nothing is recorded, nobody suppressed.
        logger.info(
            "%s %s for %s (message %s) matches no email in the outbox sent to that address",
            esp_name,
            outcome,
            event.recipient,
            event.message_id,
        )
        return None
    with transaction.atomic():
        lock_user(row.user_id)  # the lock order: the user, then their rows
        row = OutboxEmail.objects.select_for_update().filter(pk=row.pk).first()
        if row is None:  # deleted with its user meanwhile
            return None
        if outcome in ("bounced", "complained"):
            suppress(
                row.to_address,
                Suppression.Reason.HARD_BOUNCE
                if outcome == "bounced"
                else Suppression.Reason.COMPLAINT,
                detail=event.description or event.mta_response or "",
                provider=provider_name,
                outbox_email_id=row.pk,
            )
        if outcome == "unsubscribed":
            unsubscribe(row.user_id, "provider", row.key)
            return "unsubscribed"
        if not _update_row(row, outcome, event):
            return None
        name = f"email.{outcome}"
        record_event(row.user_id, name, _event_attributes(row, event, provider_name))
    return name


def _update_row(row: OutboxEmail, outcome: str, event: AnymailTrackingEvent) -> bool:
    """Write what the event tells onto the row. False if the row had it already."""
    when = event.timestamp or timezone.now()
    changes: dict[str, Any] = {}
    if row.status in (OutboxEmail.Status.UNKNOWN, OutboxEmail.Status.SENDING):
        # The provider reports on it, so the provider took it: it was sent.
        changes.update(
            status=OutboxEmail.Status.SENT,
            message_id=event.message_id or row.message_id,
            sent_at=when,
            reason=f"reconciled: {row.reason} -- then the provider reported it {outcome}",
        )
    if outcome in ONCE:
        field = ONCE[outcome]
        if getattr(row, field) is not None:
            return False
        changes[field] = when
    elif outcome in FIRST and getattr(row, FIRST[outcome]) is None:
        changes[FIRST[outcome]] = when
    if outcome in ("bounced", "deferred", "complained"):
        feedback = event.description or event.mta_response or ""
        if event.mta_response and event.description:
            feedback = f"{event.description}: {event.mta_response}"
        changes["feedback"] = feedback[:2000]
    if changes:
        changes["updated_at"] = timezone.now()
        OutboxEmail.objects.filter(pk=row.pk).update(**changes)
        tallies.note_changed(row, **changes)
    return True


def _event_attributes(row: OutboxEmail, event: AnymailTrackingEvent, provider: str) -> dict:
    when: datetime | None = event.timestamp
    attributes = {
        "outbox_id": row.pk,
        "message_id": event.message_id or row.message_id,
        "recipient": event.recipient or row.to_address,
        "template": row.template_name,
        "campaign": row.campaign_name,
        "transaction": row.transaction_name,
        "provider": provider,
        "description": (event.description or "")[:1000],
        "details": (event.mta_response or "")[:1000],
        "url": event.click_url or "",
        "occurred_at": when.isoformat() if when else "",
    }
    return {k: v for k, v in attributes.items() if v not in ("", None)}
