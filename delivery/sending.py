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
is never sent again once it has left `queued` unless a person asks for it in the admin. Rows are
claimed, sent and recorded in sets of SEGFLOW_EMAIL_SEND_BATCH (one commit to claim a set, one
call to the provider where it takes several emails a call, one commit to record the outcomes).
A row found in `sending` long after its claim (its sender died between the claim and the record
of its set's outcomes) becomes `unknown`, as does a send whose answer never came (a read
timeout): the provider may have the email. A webhook that reports on it (delivered, bounced,
opened ...) reconciles it to `sent`. So a crash can lose emails, at most
one set per sending process, and never sends one twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from anymail.exceptions import AnymailError
from anymail.message import AnymailMessage
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from segflow.addresses import address_problem, parse_address
from segflow.config import Config, EmailProviderDef
from segflow.db import update_through_index
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

    Returns each row's status afterwards. The rows and the policy are read once for the batch,
    which goes out in sets of SEGFLOW_EMAIL_SEND_BATCH: a set is claimed in one commit, its
    emails are sent, and their outcomes are recorded in one more. So a sender that dies leaves
    at most the one set it was sending in doubt (`unknown` later, never sent again), and the
    rest of its batch still queued.
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
    size = max(1, settings.SEGFLOW_EMAIL_SEND_BATCH)
    sender = _Sender(config.email_provider)
    try:
        for start in range(0, len(rows), size):
            claimed = _claim_rows(rows[start : start + size])
            outcome.update(_send_set(claimed, blocked, sender))
    finally:
        sender.close()
    for outbox_id in outbox_ids:
        if outbox_id not in outcome:
            row = OutboxEmail.objects.filter(pk=outbox_id).only("status").first()
            outcome[outbox_id] = row.status if row else "missing"
    return outcome


class _Sender:
    """The provider of a batch and its one connection, opened at the first email that needs it
    and again after a failure (which may have broken it)."""

    def __init__(self, definition: EmailProviderDef | None) -> None:
        self.definition = definition
        self.provider = provider_for(definition)
        self.settings = (
            definition.settings if definition and self.provider.name == definition.name else {}
        )
        self.backend = None

    def send_all(
        self, rows: list[OutboxEmail], budget: float
    ) -> tuple[list[_Outcome], list[OutboxEmail]]:
        """Send `rows`, several a call where the provider takes that; returns their outcomes,
        and the rows not handed over because the calls took longer than `budget` seconds."""
        outcomes: list[_Outcome] = []
        step = max(1, self.provider.batch_limit)
        started = time.monotonic()
        for start in range(0, len(rows), step):
            if start and time.monotonic() - started > budget:
                return outcomes, rows[start:]  # (a slow provider) safe to queue again
            chunk = rows[start : start + step]
            outcomes.extend(self._send_batch(chunk) if len(chunk) > 1 else [self._send(chunk[0])])
        return outcomes, []

    def _open(self) -> Exception | None:
        if self.backend is None:
            try:
                backend = self.provider.connection(self.settings)
                backend.open()
            except Exception as exc:
                return exc  # a provider that cannot even be set up fails the rows with it
            self.backend = backend
        return None

    def _send(self, row: OutboxEmail) -> _Outcome:
        if (broken := self._open()) is not None:
            return _send_failed(row, self.provider, broken)
        result = _send(row, self.definition, self.provider, self.settings, self.backend)
        if result.status != OutboxEmail.Status.SENT or not self.provider.keeps_connection(
            self.backend
        ):
            # After a failure the connection itself may be broken: the next row opens anew.
            self.close()
        return result

    def _send_batch(self, rows: list[OutboxEmail]) -> list[_Outcome]:
        if (broken := self._open()) is not None:
            return [_send_failed(row, self.provider, broken) for row in rows]
        outcomes: dict[int, _Outcome] = {}
        messages, sending = [], []
        for row in rows:
            try:
                message = build_message(row, self.definition)
                self.provider.prepare(message, self.settings, campaign=bool(row.campaign_name))
            except Exception as exc:
                outcomes[row.pk] = _send_failed(row, self.provider, exc)
                continue
            messages.append(message)
            sending.append(row)
        if messages:
            try:
                answers = self.provider.send_batch(self.backend, messages)
            except Exception as exc:
                self.close()
                answers = [exc] * len(messages)
            for row, answer in zip(sending, answers, strict=True):
                if isinstance(answer, Exception):
                    outcomes[row.pk] = _send_failed(row, self.provider, answer)
                else:
                    outcomes[row.pk] = _sent(row, self.provider, answer)
        return [outcomes[row.pk] for row in rows]

    def close(self) -> None:
        if self.backend is not None:
            _close(self.backend)
            self.backend = None


@dataclass
class _Outcome:
    """Where a claimed row goes once its send is over, recorded with the rest of its set."""

    row: OutboxEmail
    status: str
    fields: dict = field(default_factory=dict)
    # The statuses it may be moved from: `sending`, or, for `sent`, also `unknown` (a late
    # answer after the sweep gave up on the row still wins: it was sent).
    from_statuses: tuple[str, ...] = (OutboxEmail.Status.SENDING,)
    # Failed for good at an address the provider refuses: suppress it, in the same commit.
    suppress: Failure | None = None
    provider_name: str = ""


def _send_set(
    rows: list[OutboxEmail], blocked: dict[bool, dict], sender: _Sender
) -> dict[int, str]:
    """Send the claimed `rows` and record where each went, in one commit."""
    results: list[_Outcome] = []
    sendable: list[OutboxEmail] = []
    for row in rows:
        address = normalize_address(row.to_address)
        if not address:
            # A row stored before addresses were parsed, with several in it, or none.
            problem = address_problem(row.to_address, "the address")
            reason = problem or "the email has no address"
            results.append(_Outcome(row, OutboxEmail.Status.SKIPPED, {"reason": reason}))
            continue
        row.to_address = address
        reason = blocked[bool(row.campaign_name)].get((row.user_id, address))
        if reason:
            results.append(_Outcome(row, OutboxEmail.Status.SKIPPED, {"reason": reason}))
            continue
        sendable.append(row)
    # Rows still `sending` this long after their claim would be taken for a dead sender's.
    sent, unsent = sender.send_all(sendable, settings.SEGFLOW_EMAIL_SENDING_STALE_SECONDS / 2)
    results.extend(sent)
    return _record(results, unsent)


def _close(backend) -> None:
    try:
        backend.close()
    except Exception:
        logger.warning("closing the email connection failed", exc_info=True)


def _claim_rows(rows: list[OutboxEmail]) -> list[OutboxEmail]:
    """Move the rows from `queued` to `sending` in one commit; returns those this caller won.

    One UPDATE claims them all when nobody else took one meanwhile (as good as always); else it
    is rolled back and each row is claimed on its own, so that each UPDATE says who won it.
    """
    if not rows:
        return []
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    marks = ", ".join(["%s"] * len(rows))
    try:
        with transaction.atomic():
            # (No count changes: an email being sent still counts as queued, see tallies.py.)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {connection.ops.quote_name(OutboxEmail._meta.db_table)} "
                    "SET status = %s, attempts = attempts + 1, updated_at = %s "
                    f"WHERE id IN ({marks}) AND status = %s "
                    "AND (next_attempt_at IS NULL OR next_attempt_at <= %s)",
                    [
                        OutboxEmail.Status.SENDING,
                        now,
                        *(row.pk for row in rows),
                        OutboxEmail.Status.QUEUED,
                        now,
                    ],
                )
                if cursor.rowcount != len(rows):
                    raise _Contended
    except _Contended:
        return [row for row in rows if _claim(row)]
    except OperationalError:
        if not connection.get_autocommit():
            raise  # (a deadlock inside the caller's transaction broke all of it)
        return [row for row in rows if _claim(row)]
    for row in rows:
        row.attempts += 1
    return rows


class _Contended(Exception):
    """Another sender (or the sweep) moved one of the rows since they were read."""


def _claim(row: OutboxEmail) -> bool:
    """Move the row from `queued` to `sending`; only one caller can win it."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
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


def _send(row: OutboxEmail, definition, provider, settings_: dict, backend) -> _Outcome:
    message = build_message(row, definition)
    try:
        provider.prepare(message, settings_, campaign=bool(row.campaign_name))
        message.connection = backend
        message.send()
    except Exception as exc:
        return _send_failed(row, provider, exc)
    status = getattr(message, "anymail_status", None)
    return _sent(row, provider, (getattr(status, "message_id", None) or "") if status else "")


def _sent(row: OutboxEmail, provider, message_id: str) -> _Outcome:
    logger.info("email %s sent by %s (message %s)", row.key, provider.name, message_id or "-")
    return _Outcome(
        row,
        OutboxEmail.Status.SENT,
        {"message_id": str(message_id)[:255], "sent_at": timezone.now()},
        from_statuses=(OutboxEmail.Status.SENDING, OutboxEmail.Status.UNKNOWN),
    )


def _send_failed(row: OutboxEmail, provider, exc: Exception) -> _Outcome:
    if not isinstance(exc, AnymailError | OSError):
        logger.exception("email %s: sending raised", row.key)  # a bug is worth a traceback
    return _failed(row, provider.name, provider.classify(exc))


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """How long to wait after the `attempts`-th failed call: doubling, capped, at least as long
    as the provider asked."""
    base = settings.SEGFLOW_EMAIL_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)
    seconds = min(base, settings.SEGFLOW_EMAIL_RETRY_MAX_SECONDS)
    return timedelta(seconds=max(seconds, retry_after or 0))


def _failed(row: OutboxEmail, provider_name: str, failure: Failure) -> _Outcome:
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
        return _Outcome(
            row,
            OutboxEmail.Status.QUEUED,
            {
                "reason": f"attempt {attempts} failed, next at {_when(due)}: {failure.reason}",
                "next_attempt_at": due,
            },
        )
    if failure.kind == "unknown":
        logger.error("email %s: the provider may or may not have it: %s", row.key, failure.reason)
        return _Outcome(
            row,
            OutboxEmail.Status.UNKNOWN,
            {
                "reason": (
                    "no answer from the provider, which may have sent it; not sent again "
                    f"(a webhook about it marks it sent): {failure.reason}"
                )
            },
        )
    if failure.kind == "transient":
        reason = f"gave up after {attempts} attempts: {failure.reason}"
    else:
        reason = failure.reason
    logger.error("email %s failed: %s", row.key, reason)
    return _Outcome(
        row,
        OutboxEmail.Status.FAILED,
        {"reason": reason},
        suppress=failure if failure.suppress_address else None,
        provider_name=provider_name,
    )


def _record(results: list[_Outcome], unsent: list[OutboxEmail]) -> dict[int, str]:
    """Move each row of a set out of `sending` to where its send took it, in one commit (and
    `unsent` rows back to `queued`); a row that something else (the sweep) moved meanwhile
    keeps its status. Returns each row's status."""
    now = timezone.now()
    for result in results:
        result.fields.setdefault("reason", "")
        if result.status != OutboxEmail.Status.QUEUED:
            result.fields.setdefault("next_attempt_at", None)
        result.fields.update(status=result.status, updated_at=now)

    def write() -> dict[int, str]:
        statuses: dict[int, str] = {}
        change: Counter = Counter()
        with transaction.atomic():
            alike = _record_alike(results)
            for result in alike:
                statuses[result.row.pk] = result.status
                change.update(
                    tallies.change_of(
                        result.row, {"status": OutboxEmail.Status.SENDING}, **result.fields
                    )
                )
            if not alike:
                for result in results:
                    _record_one(result, statuses, change)
            if unsent:
                update_through_index(
                    OutboxEmail.objects.filter(
                        pk__in=[row.pk for row in unsent], status=OutboxEmail.Status.SENDING
                    ),
                    "PRIMARY",
                    status=OutboxEmail.Status.QUEUED,
                    attempts=F("attempts") - 1,
                    updated_at=now,
                )
                ids = [row.pk for row in unsent]
                transaction.on_commit(lambda: enqueue_in_batches("deliver_emails", ids))
            tallies.add_change(change)
        return statuses

    statuses = _with_retries(write)
    for result in results:
        if result.row.pk not in statuses:
            row = result.row
            current = OutboxEmail.objects.filter(pk=row.pk).values_list("status", flat=True).first()
            logger.warning(
                "email %s: was %s before it could be marked %s", row.key, current, result.status
            )
            statuses[row.pk] = current or "missing"
    for row in unsent:
        statuses[row.pk] = OutboxEmail.Status.QUEUED
    return statuses


def _record_one(result: _Outcome, statuses: dict[int, str], change: Counter) -> None:
    """Record one row's outcome, if it is still in one of the statuses it may leave."""
    row, fields = result.row, result.fields
    columns = [OutboxEmail._meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in columns)
    values = [f.get_db_prep_save(fields[f.name], connection) for f in columns]
    for from_status in result.from_statuses:
        if _update_row(row.pk, assignments, values, from_statuses=(from_status,)):
            # counted from the status it had, which the one-status UPDATE tells
            change.update(tallies.change_of(row, {"status": from_status}, **fields))
            statuses[row.pk] = result.status
            break
    if row.pk in statuses and result.suppress is not None:
        suppress(
            row.to_address,
            Suppression.Reason.INACTIVE,
            detail=result.suppress.reason,
            provider=result.provider_name,
            outbox_email_id=row.pk,
        )


def _record_alike(results: list[_Outcome]) -> list[_Outcome]:
    """Record a set whose outcomes are alike (as good as always: all `sent`) in one UPDATE, the
    values that differ per row (a message id) chosen by id. Returns the results recorded, or
    nothing, with nothing changed, when they are not alike or a row had left `sending` (the
    sweep took it): then each row is recorded on its own."""
    if len(results) < 2 or any(
        r.status != results[0].status or r.fields.keys() != results[0].fields.keys() or r.suppress
        for r in results
    ):
        return []
    first = results[0]
    columns = [OutboxEmail._meta.get_field(name) for name in first.fields]
    ids = [result.row.pk for result in results]
    assignments, params = [], []
    for column in columns:
        values = [column.get_db_prep_save(r.fields[column.name], connection) for r in results]
        name = connection.ops.quote_name(column.column)
        if all(value == values[0] for value in values):
            assignments.append(f"{name} = %s")
            params.append(values[0])
        else:
            assignments.append(f"{name} = CASE id {' '.join(['WHEN %s THEN %s'] * len(ids))} END")
            params.extend(v for pair in zip(ids, values, strict=True) for v in pair)
    marks = ", ".join(["%s"] * len(ids))
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {connection.ops.quote_name(OutboxEmail._meta.db_table)} "
                f"SET {', '.join(assignments)} WHERE id IN ({marks}) AND status = %s",
                [*params, *ids, OutboxEmail.Status.SENDING],
            )
            if cursor.rowcount != len(ids):
                raise _Contended
    except _Contended:
        return []
    return results


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

    Every email's outcome runs it (and its claim, when another sender contends for its set), so
    the statement is written out: building it through the ORM cost more than running it.
    """
    marks = ", ".join(["%s"] * len(from_statuses))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(OutboxEmail._meta.db_table)} SET {assignments} "
            f"WHERE id = %s AND status IN ({marks}){condition}",
            [*params, pk, *from_statuses, *condition_params],
        )
        return cursor.rowcount


def _with_retries(update, attempts: int = 5):
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
        count = update_through_index(stale.filter(pk__in=ids), "PRIMARY", **changes)
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
        update_through_index(
            OutboxEmail.objects.filter(pk__in=ids),
            "PRIMARY",
            **changes,
            next_attempt_at=None,
            updated_at=now,
        )
        tallies.note_rows_changed(rows, **changes, updated_at=now)
    transaction.on_commit(lambda: enqueue_in_batches("deliver_emails", ids))
    return len(ids)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
