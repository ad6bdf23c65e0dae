"""The outbox: every email is a row before it is handed to the provider, under a unique key.

`OutboxWriter` is the one way rows are written: campaigns and transactions alike queue their
emails through it, a batch at a time. Each row is rendered and stored under the key of its cause
(a cursor's step, or a transaction and an event), so a retried step or event finds its row
instead of sending again; rows that may not be sent (no address, suppressed, unsubscribed, over
the frequency cap) are stored `skipped` with the reason. A batch's new rows are inserted together,
in one statement (`flush`). `delivery.sending` then hands queued rows to the provider.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from segflow.config import Config, EmailContentDef
from segflow.db import insert_rows
from segflow.dispatch import enqueue
from segflow.models import Event, User
from templates.rendering import RenderError, render_email

from . import tallies
from .models import OutboxEmail
from .policy import FrequencyCaps, block_reasons
from .providers import from_address, provider_for
from .unsubscribe import unsubscribe_url

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
    # The pushed version whose flow sent it, when not the writer's config's (an old flow).
    config_version: int | None = None

    @classmethod
    def campaign_step(
        cls,
        campaign: str,
        cursor_id: int,
        step_index: int,
        template: str,
        config_version: int | None = None,
    ):
        return cls(
            key=f"campaign:{cursor_id}:{step_index}",
            template_name=template,
            campaign_name=campaign,
            cursor_id=cursor_id,
            step_index=step_index,
            config_version=config_version,
        )

    @classmethod
    def transaction_event(cls, transaction_name: str, event: Event):
        return cls(
            key=f"transaction:{transaction_name}:{event.pk}",
            template_name=transaction_name,
            transaction_name=transaction_name,
            event=event,
        )

    @property
    def is_campaign(self) -> bool:
        return bool(self.campaign_name)


class OutboxWriter:
    """Queues the emails of a batch of cursor steps or events with few statements.

    The rows the batch's causes already stored (by cursor, or by the keys it will write) and the
    suppressions and unsubscriptions of its users are read once, up front; the new rows wait in
    memory until `flush` inserts them all in one statement (and gives them their ids); the
    deliveries go out after commit as one task. The caller holds the locks of the users (and
    cursors), so no other worker stores emails for the same causes meanwhile.
    """

    def __init__(
        self,
        config: Config,
        users: list[User],
        *,
        cursor_ids: list[int] = (),
        keys: list[str] = (),
        campaign: bool,
    ) -> None:
        self.config = config
        self.existing = (
            {
                row.key: row
                for row in OutboxEmail.objects.filter(
                    Q(cursor_id__in=list(cursor_ids)) | Q(key__in=list(keys))
                )
            }
            if cursor_ids or keys
            else {}
        )
        self.blocked = block_reasons([(user.pk, user.email) for user in users], campaign=campaign)
        # Transactional email is never capped.
        self.caps = FrequencyCaps(
            config.frequency_cap if campaign else None, [user.pk for user in users], timezone.now()
        )
        self.pending: list[OutboxEmail] = []
        self.queued: list[int] = []
        self.skipped: Counter[str] = Counter()

    def queue(self, content: EmailContentDef, user: User, origin: EmailOrigin) -> OutboxEmail:
        """The email for `origin`, rendered for `user`, to be stored by the next `flush` (its
        `pk` is None until then); or the row it already has."""
        existing = self.existing.get(origin.key)
        if existing is not None:
            return existing
        reason = self.blocked.get((user.pk, user.email), "")
        if origin.is_campaign:
            reason = reason or self.caps.reason(user.pk)
        row = _new_row(self.config, content, user, origin, reason)
        self.pending.append(row)
        self.existing[origin.key] = row
        if origin.is_campaign:
            self.caps.note(row)
        return row

    def flush(self) -> None:
        """Insert the rows queued since the last flush, in one statement, and count them."""
        rows, self.pending = self.pending, []
        if not rows:
            return
        insert_rows(rows)
        if any(row.pk is None for row in rows):
            # A database that cannot return the new ids from a multi-row insert (MySQL; MariaDB
            # and SQLite can): read them back by their unique keys.
            ids = dict(
                OutboxEmail.objects.filter(key__in=[row.key for row in rows]).values_list(
                    "key", "pk"
                )
            )
            for row in rows:
                row.pk = ids[row.key]
        # (an insert sends no post_save: the rows are counted here, in the same transaction.)
        tallies.note_created(rows)
        for row in rows:
            if row.status == OutboxEmail.Status.QUEUED:
                self.queued.append(row.pk)
            elif row.status == OutboxEmail.Status.FAILED:
                logger.error("email %s not sent: %s", row.key, row.reason)
            else:
                self.skipped[row.reason] += 1

    def deliver_after_commit(self) -> None:
        """Store what is still pending; hand the queued emails to delivery after commit; say once
        why the others were not."""
        self.flush()
        if self.queued:
            ids = list(self.queued)
            transaction.on_commit(lambda: enqueue("deliver_emails", ids))
        # One line for the batch, not one per email: fifty users without an address are one fact.
        for reason, count in self.skipped.items():
            logger.info("%s email(s) skipped: %s", count, reason)
        self.skipped.clear()


def _new_row(
    config: Config, content: EmailContentDef, user: User, origin: EmailOrigin, block_reason: str
) -> OutboxEmail:
    """The unsaved row for `origin`: rendered and queued, or skipped or failed with the reason."""
    now = timezone.now()
    row = OutboxEmail(
        key=origin.key,
        user=user,
        to_address=user.email,  # the one normalised address, or ""
        from_address=from_address(config.email_provider),
        provider=provider_for(config.email_provider).name,
        template_name=origin.template_name,
        campaign_name=origin.campaign_name,
        cursor_id=origin.cursor_id,
        step_index=origin.step_index,
        transaction_name=origin.transaction_name,
        event=origin.event,
        created_at=now,
        updated_at=now,
        config_version=(
            origin.config_version if origin.config_version is not None else config.version
        ),
    )
    if not row.to_address:
        # No address, or an attribute that is not exactly one bare address: nothing is sent.
        block_reason = block_reason or user.email_problem
    if block_reason:
        row.status, row.reason = OutboxEmail.Status.SKIPPED, block_reason
        return row
    if origin.is_campaign:
        row.unsubscribe_url = unsubscribe_url(user.pk, origin.key)
    try:
        rendered = render_email(
            content,
            config.base_dir,
            user,
            origin.event,
            version=config.fingerprint,
            unsubscribe_url=row.unsubscribe_url,
        )
    except RenderError as exc:
        row.status, row.reason = OutboxEmail.Status.FAILED, str(exc)
    else:
        row.subject, row.html, row.text = rendered.subject, rendered.html, rendered.text
    return row
