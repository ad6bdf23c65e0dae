"""Delivering the outbox: queued rows handed to the provider, each at most once.

`delivery.outbox` stores each email as a row first; `deliver_emails` hands queued rows to the
provider. A row moves:

    queued -> sending -> sent      (the provider took it; its message id is kept)
                      -> queued    (a passing failure: `next_attempt_at` says when the sweep
                                    tries again, with exponential backoff)
                      -> failed    (a permanent failure, or too many attempts)
                      -> unknown   (the request may have reached the provider but no answer
                                    came back; see below)
    queued -> skipped              (suppressed address, unsubscribed user, no address)

The rule for a crash: a row leaves `queued` through an UPDATE that only one caller can win, and
is never sent again once it has left `queued` unless a person asks for it in the admin. A row
found in `sending` long after its claim (its sender died between the provider's answer and the
row's update, or before) becomes `unknown`, as does a send whose answer never came (a read
timeout): the provider may have the email. A webhook that reports on it (delivered, bounced,
opened ...) reconciles it to `sent`. So a crash can lose an email, never send one twice.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from anymail.exceptions import AnymailError
from anymail.message import AnymailMessage
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from segflow.addresses import address_problem, parse_address
from segflow.config import Config, EmailProviderDef
from segflow.dispatch import enqueue_in_batches

from . import tallies
from .models import OutboxEmail, Suppression
from .policy import block_reasons, normalize_address, suppress
from .providers import Failure, provider_for
from .tracking import OUTBOX_ID_METADATA
from .unsubscribe import list_unsubscribe_headers

logger = logging.getLogger(__name__)


def build_message(row: OutboxEmail, provider: EmailProviderDef | None) -> AnymailMessage:
    """The message the provider gets for `row`: its parts, headers and tracking metadata."""
    message = AnymailMessage(
        subject=row.subject,
        body=row.text,
        from_email=row.from_address,
        # anymail reads an address string as a list: only one parsed, bare address goes in
        # (NotOneAddress, a ValueError, for anything else).
        to=[parse_address(row.to_address)],
        reply_to=[provider.reply_to] if provider and provider.reply_to else None,
        headers=list_unsubscribe_headers(row.unsubscribe_url) if row.unsubscribe_url else None,
    )
    message.attach_alternative(row.html, "text/html")
    # Comes back in the providers' webhooks, so even a row whose send got no answer is found.
    message.metadata = {OUTBOX_ID_METADATA: str(row.pk)}
    if row.template_name:
        message.tags = [row.template_name[:100]]
    return message


def deliver_emails(outbox_ids: list[int], config: Config) -> dict[int, str]:
    """Hand queued, due emails to the provider, each at most once, over one connection.

    Returns each row's status afterwards. The rows and the policy are read once for the batch;
    each row is claimed just before its own send, so a sender that dies leaves at most the one
    email it was sending in doubt, and every other row of its batch still queued.
    """
    now = timezone.now()
    outcome: dict[int, str] = {}
    rows = list(
        OutboxEmail.objects.filter(pk__in=outbox_ids, status=OutboxEmail.Status.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("pk")
    )
    # Bounces, complaints and unsubscribes that arrived since a row was queued still count.
    blocked = {
        campaign: block_reasons(
            [(row.user_id, row.to_address) for row in rows if bool(row.campaign_name) == campaign],
            campaign=campaign,
        )
        for campaign in (True, False)
    }
    definition = config.email_provider
    provider = provider_for(definition)
    settings_ = definition.settings if definition and provider.name == definition.name else {}
    backend = None
    try:
        for row in rows:
            if not _claim(row):
                continue
            address = normalize_address(row.to_address)
            if not address:
                # A row stored before addresses were parsed, with several in it, or none.
                problem = address_problem(row.to_address, "the address")
                outcome[row.pk] = _finish(
                    row, OutboxEmail.Status.SKIPPED, reason=problem or "the email has no address"
                )
                continue
            row.to_address = address
            reason = blocked[bool(row.campaign_name)].get((row.user_id, address))
            if reason:
                outcome[row.pk] = _finish(row, OutboxEmail.Status.SKIPPED, reason=reason)
                continue
            if backend is None:
                try:
                    backend = provider.connection(settings_)
                    backend.open()
                except Exception as exc:
                    # A provider that cannot even be set up fails the row with its reason.
                    backend = None
                    outcome[row.pk] = _send_failed(row, provider, exc)
                    continue
            outcome[row.pk] = _send(row, definition, provider, settings_, backend)
            if outcome[row.pk] != OutboxEmail.Status.SENT or not provider.keeps_connection(backend):
                # After a failure the connection itself may be broken: the next row opens anew.
                _close(backend)
                backend = None
    finally:
        if backend is not None:
            _close(backend)
    for outbox_id in outbox_ids:
        if outbox_id not in outcome:
            row = OutboxEmail.objects.filter(pk=outbox_id).only("status").first()
            outcome[outbox_id] = row.status if row else "missing"
    return outcome


def _close(backend) -> None:
    try:
        backend.close()
    except Exception:
        logger.warning("closing the email connection failed", exc_info=True)


def _claim(row: OutboxEmail) -> bool:
    """Move the row from `queued` to `sending`; only one caller can win it."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    # (No count changes: an email being sent still counts as queued, see delivery/tallies.py.)
    claimed = _update_row(
        row.pk,
        "status = %s, attempts = attempts + 1, updated_at = %s",
        [OutboxEmail.Status.SENDING, now],
        from_statuses=(OutboxEmail.Status.QUEUED,),
        condition=" AND (next_attempt_at IS NULL OR next_attempt_at <= %s)",
        condition_params=[now],
    )
    row.attempts += 1
    return bool(claimed)


def _send(row: OutboxEmail, definition, provider, settings_: dict, backend) -> str:
    message = build_message(row, definition)
    try:
        provider.prepare(message, settings_, campaign=bool(row.campaign_name))
        message.connection = backend
        message.send()
    except Exception as exc:
        return _send_failed(row, provider, exc)
    status = getattr(message, "anymail_status", None)
    message_id = (getattr(status, "message_id", None) or "") if status else ""
    logger.info("email %s sent by %s (message %s)", row.key, provider.name, message_id or "-")
    return _finish(
        row,
        OutboxEmail.Status.SENT,
        message_id=str(message_id)[:255],
        sent_at=timezone.now(),
        # A late answer after the sweep gave up on the row still wins: it was sent.
        from_statuses=(OutboxEmail.Status.SENDING, OutboxEmail.Status.UNKNOWN),
    )


def _send_failed(row: OutboxEmail, provider, exc: Exception) -> str:
    if not isinstance(exc, AnymailError | OSError):
        logger.exception("email %s: sending raised", row.key)  # a bug is worth a traceback
    return _failed(row, provider.name, provider.classify(exc))


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """How long to wait after the `attempts`-th failed call: doubling, capped, at least as long
    as the provider asked."""
    base = settings.SEGFLOW_EMAIL_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)
    seconds = min(base, settings.SEGFLOW_EMAIL_RETRY_MAX_SECONDS)
    return timedelta(seconds=max(seconds, retry_after or 0))


def _failed(row: OutboxEmail, provider_name: str, failure: Failure) -> str:
    attempts, now = row.attempts, timezone.now()
    if failure.kind == "transient" and attempts < settings.SEGFLOW_EMAIL_MAX_ATTEMPTS:
        due = now + retry_delay(attempts, failure.retry_after)
        logger.warning(
            "email %s: attempt %s failed (%s); trying again at %s",
            row.key,
            attempts,
            failure.reason,
            due.isoformat(),
        )
        return _finish(
            row,
            OutboxEmail.Status.QUEUED,
            reason=f"attempt {attempts} failed, next at {_when(due)}: {failure.reason}",
            next_attempt_at=due,
        )
    if failure.kind == "unknown":
        logger.error("email %s: the provider may or may not have it: %s", row.key, failure.reason)
        return _finish(
            row,
            OutboxEmail.Status.UNKNOWN,
            reason=(
                "no answer from the provider, which may have sent it; not sent again "
                f"(a webhook about it marks it sent): {failure.reason}"
            ),
        )
    if failure.kind == "transient":
        reason = f"gave up after {attempts} attempts: {failure.reason}"
    else:
        reason = failure.reason
    logger.error("email %s failed: %s", row.key, reason)
    if failure.suppress_address:
        suppress(
            row.to_address,
            Suppression.Reason.INACTIVE,
            detail=failure.reason,
            provider=provider_name,
            outbox_email_id=row.pk,
        )
    return _finish(row, OutboxEmail.Status.FAILED, reason=reason)


def _finish(
    row: OutboxEmail,
    status: str,
    *,
    from_statuses: tuple[str, ...] = (OutboxEmail.Status.SENDING,),
    **fields,
) -> str:
    """Move the row out of `sending`, unless something else (the sweep) moved it meanwhile."""
    fields.setdefault("reason", "")
    if status != OutboxEmail.Status.QUEUED:
        fields.setdefault("next_attempt_at", None)
    fields.update(status=status, updated_at=timezone.now())
    columns = [OutboxEmail._meta.get_field(name) for name in fields]

    def move(from_status: str) -> int:
        with transaction.atomic():
            moved = _update_row(
                row.pk,
                ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in columns),
                [f.get_db_prep_save(fields[f.name], connection) for f in columns],
                from_statuses=(from_status,),
            )
            if moved:  # counted from the status it had, which the one-status UPDATE tells
                tallies.note_changed(row, {"status": from_status}, **fields)
            return moved

    moved = 0
    for from_status in from_statuses:
        moved = _with_retries(lambda from_status=from_status: move(from_status))
        if moved:
            break
    if not moved:
        current = OutboxEmail.objects.filter(pk=row.pk).values_list("status", flat=True).first()
        logger.warning("email %s: was %s before it could be marked %s", row.key, current, status)
        return current or "missing"
    return status


def _update_row(
    pk: int,
    assignments: str,
    params: list,
    *,
    from_statuses: tuple[str, ...],
    condition: str = "",
    condition_params: tuple | list = (),
) -> int:
    """UPDATE one outbox row, if its status is one of `from_statuses`; returns 1 if it was.

    Every email runs this twice (its claim and its outcome), so the statement is written out:
    building it through the ORM cost more than the database took to run it.
    """
    marks = ", ".join(["%s"] * len(from_statuses))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(OutboxEmail._meta.db_table)} SET {assignments} "
            f"WHERE id = %s AND status IN ({marks}){condition}",
            [*params, pk, *from_statuses, *condition_params],
        )
        return cursor.rowcount


def _with_retries(update, attempts: int = 5) -> int:
    """Run `update`, trying again after a deadlock or lock wait timeout.

    Only for updates that are safe to repeat. Recording the provider's answer is one: if it were
    lost to a deadlock, an email the provider took would sit in `sending` and end up `unknown`.
    """
    for attempt in range(1, attempts + 1):
        try:
            return update()
        except OperationalError:
            if attempt == attempts or not connection.get_autocommit():
                raise
            logger.warning("outbox update hit a lock conflict; trying again (%s)", attempt)
            time.sleep(0.05 * attempt)
    return 0


def mark_stale_sending(now: datetime) -> int:
    """Rows whose sender died mid-send become `unknown`, never sent again. Returns how many."""
    before = now - timedelta(seconds=settings.SEGFLOW_EMAIL_SENDING_STALE_SECONDS)
    stale = OutboxEmail.objects.filter(status=OutboxEmail.Status.SENDING, updated_at__lte=before)
    # Read first, then update by primary key: a range UPDATE over the status index would lock
    # index entries that senders finishing their rows need, and deadlock with them.
    ids = list(stale.values_list("pk", flat=True)[:1000])
    if not ids:
        return 0
    changes = {
        "status": OutboxEmail.Status.UNKNOWN,
        "reason": (
            f"still sending {settings.SEGFLOW_EMAIL_SENDING_STALE_SECONDS}s after it began: its "
            "sender stopped before recording the provider's answer; not sent again (a webhook "
            "about it marks it sent)"
        ),
        "updated_at": now,
    }
    with transaction.atomic():
        count = stale.filter(pk__in=ids).update(**changes)
        if count:  # the rows this update moved: they were in `sending`
            moved = OutboxEmail.objects.filter(pk__in=ids, **changes)
            tallies.note_rows_moved(moved, before={"status": OutboxEmail.Status.SENDING})
    if count:
        logger.error("%s email(s) left in `sending` by a stopped sender are now `unknown`", count)
    return count


def due_retry_ids(
    now: datetime, limit: int = 500, not_swept_since: datetime | None = None
) -> list[int]:
    """Queued rows whose retry is due, or whose first delivery task was lost; with
    `not_swept_since`, only rows the sweep has not handed out since then."""
    lost_before = now - timedelta(seconds=settings.SEGFLOW_SWEEP_AFTER_SECONDS)
    rows = OutboxEmail.objects.all()
    if not_swept_since is not None:
        rows = rows.filter(Q(swept_at__isnull=True) | Q(swept_at__lte=not_swept_since))
    return list(
        rows.filter(status=OutboxEmail.Status.QUEUED)
        .filter(
            Q(next_attempt_at__lte=now)
            | Q(next_attempt_at__isnull=True, created_at__lte=lost_before)
        )
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )


def send_again(outbox_ids: list[int]) -> int:
    """Queue failed or unknown rows once more: a person's decision (the admin), never automatic."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            OutboxEmail.objects.select_for_update().filter(
                pk__in=outbox_ids,
                status__in=(OutboxEmail.Status.FAILED, OutboxEmail.Status.UNKNOWN),
                attempts__gt=0,  # (a template that failed to render has nothing to send)
            )
        )
        ids = [row.pk for row in rows]
        changes = {"status": OutboxEmail.Status.QUEUED, "reason": "sent again by hand"}
        OutboxEmail.objects.filter(pk__in=ids).update(
            **changes, next_attempt_at=None, updated_at=now
        )
        tallies.note_rows_changed(rows, **changes, updated_at=now)
    transaction.on_commit(lambda: enqueue_in_batches("deliver_emails", ids))
    return len(ids)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
