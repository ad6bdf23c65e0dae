"""The outbox: every email is a row before it is handed to the provider, under a unique key.

`queue_email` renders and stores the email (or finds the row a retry already stored);
`deliver_email` hands a queued row to the provider at most once: a row leaves `queued` through an
UPDATE that only one caller can win.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.utils import timezone

from templates.rendering import RenderError, render_email

from .config import Config, EmailContentDef
from .models import Event, OutboxEmail, User
from .providers import email_connection, from_address

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmailOrigin:
    """What caused an email; `key` is unique per cause, so one cause sends at most one email."""

    key: str
    template_name: str = ""
    campaign_name: str = ""
    cursor_id: int | None = None
    step_index: int | None = None
    transaction_name: str = ""
    event: Event | None = None

    @classmethod
    def campaign_step(cls, campaign: str, cursor_id: int, step_index: int, template: str):
        return cls(
            key=f"campaign:{cursor_id}:{step_index}",
            template_name=template,
            campaign_name=campaign,
            cursor_id=cursor_id,
            step_index=step_index,
        )

    @classmethod
    def transaction_event(cls, transaction_name: str, event: Event):
        return cls(
            key=f"transaction:{transaction_name}:{event.pk}",
            template_name=transaction_name,
            transaction_name=transaction_name,
            event=event,
        )


def queue_email(
    config: Config,
    content: EmailContentDef,
    user: User,
    origin: EmailOrigin,
    *,
    block_reason: str = "",
) -> OutboxEmail:
    """Store the email for `origin`, rendered for `user`, and deliver it after commit.

    Returns the existing row if `origin` already has one. A user without an email address, or a
    `block_reason`, gives a `skipped` row that says why, and nothing is sent.
    """
    existing = OutboxEmail.objects.filter(key=origin.key).first()
    if existing is not None:
        return existing

    now = timezone.now()
    row = OutboxEmail(
        key=origin.key,
        user=user,
        to_address=user.email,
        from_address=from_address(config.email_provider),
        template_name=origin.template_name,
        campaign_name=origin.campaign_name,
        cursor_id=origin.cursor_id,
        step_index=origin.step_index,
        transaction_name=origin.transaction_name,
        event=origin.event,
        created_at=now,
        updated_at=now,
    )
    if block_reason:
        row.status, row.reason = OutboxEmail.Status.SKIPPED, block_reason
    elif not row.to_address:
        row.status = OutboxEmail.Status.SKIPPED
        row.reason = "the user has no email address (set the attribute `email`)"
    else:
        try:
            rendered = render_email(
                content, config.base_dir, user, origin.event, version=config.fingerprint
            )
        except RenderError as exc:
            row.status, row.reason = OutboxEmail.Status.FAILED, str(exc)
        else:
            row.subject, row.html, row.text = rendered.subject, rendered.html, rendered.text

    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        # Another worker stored this origin's email first: theirs is the one.
        return OutboxEmail.objects.get(key=origin.key)

    if row.status == OutboxEmail.Status.QUEUED:
        from .dispatch import enqueue

        transaction.on_commit(lambda: enqueue("deliver_email", row.pk))
    else:
        log = logger.error if row.status == OutboxEmail.Status.FAILED else logger.info
        log("email %s not sent: %s", row.key, row.reason)
    return row


def deliver_email(outbox_id: int, config: Config) -> str:
    """Hand a queued email to the provider. Returns the row's status afterwards."""
    now = timezone.now()
    claimed = OutboxEmail.objects.filter(pk=outbox_id, status=OutboxEmail.Status.QUEUED).update(
        status=OutboxEmail.Status.SENDING, updated_at=now
    )
    if not claimed:
        row = OutboxEmail.objects.filter(pk=outbox_id).only("status").first()
        return row.status if row else "missing"

    row = OutboxEmail.objects.get(pk=outbox_id)
    provider = config.email_provider
    message = EmailMultiAlternatives(
        subject=row.subject,
        body=row.text,
        from_email=row.from_address,
        to=[row.to_address],
        reply_to=[provider.reply_to] if provider and provider.reply_to else None,
    )
    message.attach_alternative(row.html, "text/html")
    try:
        # Inside the try: a provider that cannot even be set up fails the row with its reason.
        message.connection = email_connection(provider)
        message.send()
    except Exception as exc:
        logger.exception("sending email %s failed", row.key)
        status, reason, message_id = OutboxEmail.Status.FAILED, repr(exc), ""
    else:
        status, reason = OutboxEmail.Status.SENT, ""
        anymail_status = getattr(message, "anymail_status", None)
        message_id = (getattr(anymail_status, "message_id", None) or "") if anymail_status else ""
    OutboxEmail.objects.filter(pk=outbox_id).update(
        status=status,
        reason=reason,
        message_id=message_id or "",
        attempts=row.attempts + 1,
        sent_at=timezone.now() if status == OutboxEmail.Status.SENT else None,
        updated_at=timezone.now(),
    )
    return status
