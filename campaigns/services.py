"""Entering users into campaigns, advancing their cursors step by step, and ending cursors.

The audience of a campaign is the users in all of its segments and in none of its excluded ones,
read from segment memberships. Entering and exiting are set-based statements over that audience,
for everyone or for one user; advancing a cursor replays its flow (campaigns.flow) and performs the
next steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from segflow.config import CampaignDef, Config
from segflow.models import OutboxEmail, User
from segflow.outbox import EmailOrigin, OutboxWriter
from segments.models import Segment
from segments.services import IdRange, range_condition

from .flow import (
    FlowDiverged,
    FlowFailed,
    FlowRun,
    RecordedStep,
    SendEmail,
    SendEmailResult,
    Step,
    Wait,
)
from .models import Campaign, Cursor, CursorStep

logger = logging.getLogger(__name__)

# A flow that takes this many steps without ever waiting is looping: stop it, sending nothing.
MAX_STEPS_PER_ADVANCE = 25


class RunawayFlow(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# The audience.


def _audience_sql(
    campaign: Campaign,
    segment_ids: dict[str, int],
    user_id: str | None,
    id_range: IdRange | None = None,
):
    include = [segment_ids[name] for name in campaign.segments]
    exclude = [segment_ids[name] for name in campaign.exclude_segments]
    sql = f"SELECT m.user_id FROM segment_memberships m WHERE m.segment_id IN ({_marks(include)})"
    params: list = list(include)
    if user_id is not None:
        sql += " AND m.user_id = %s"
        params.append(user_id)
    if id_range is not None:
        in_range, range_params = range_condition("m.user_id", id_range)
        sql += in_range
        params += range_params
    if exclude:
        sql += (
            " AND NOT EXISTS (SELECT 1 FROM segment_memberships x WHERE x.user_id = m.user_id "
            f"AND x.segment_id IN ({_marks(exclude)}))"
        )
        params += exclude
    sql += " GROUP BY m.user_id HAVING COUNT(*) = %s"
    params.append(len(include))
    return sql, params


def _marks(values: list) -> str:
    return ", ".join(["%s"] * len(values))


def _segment_ids() -> dict[str, int]:
    return dict(Segment.objects.values_list("name", "id"))


def _insert_ignore() -> str:
    return "INSERT OR IGNORE" if connection.vendor == "sqlite" else "INSERT IGNORE"


@dataclass(frozen=True)
class AudienceChange:
    entered: int
    exited: int


def reconcile_campaign(
    campaign: Campaign,
    now: datetime,
    user_id: str | None = None,
    id_range: IdRange | None = None,
) -> AudienceChange:
    """Enter the audience's users who have no place in the campaign; in a dynamic campaign, end
    the cursors of users who left it and let finished ones back in later.

    Everyone, only `user_id`, or the users in `id_range`. New cursors are due at once.
    """
    if not campaign.active:
        return AudienceChange(0, 0)
    segment_ids = _segment_ids()
    audience, audience_params = _audience_sql(campaign, segment_ids, user_id, id_range)
    stamp = connection.ops.adapt_datetimefield_value(now)
    user_filter, user_params = (" AND user_id = %s", [user_id]) if user_id is not None else ("", [])
    if id_range is not None:
        in_range, range_params = range_condition("user_id", id_range)
        user_filter, user_params = user_filter + in_range, user_params + range_params
    exited = 0
    with connection.cursor() as cursor:
        if campaign.behavior == Campaign.Behavior.DYNAMIC:
            cursor.execute(
                "UPDATE campaign_cursors SET status = %s, entry_key = NULL, due_at = NULL, "
                "ended_at = %s, updated_at = %s, end_reason = %s "
                f"WHERE campaign_id = %s AND status = %s{user_filter} "
                f"AND user_id NOT IN ({audience})",
                [
                    Cursor.Status.EXITED,
                    stamp,
                    stamp,
                    "the user no longer matches the campaign's segments",
                    campaign.pk,
                    Cursor.Status.ACTIVE,
                    *user_params,
                    *audience_params,
                ],
            )
            exited = max(cursor.rowcount, 0)
            cursor.execute(
                "UPDATE campaign_cursors SET entry_key = NULL, updated_at = %s "
                f"WHERE campaign_id = %s AND status <> %s AND entry_key IS NOT NULL{user_filter} "
                f"AND user_id NOT IN ({audience})",
                [stamp, campaign.pk, Cursor.Status.ACTIVE, *user_params, *audience_params],
            )
        cursor.execute(
            f"{_insert_ignore()} INTO campaign_cursors (campaign_id, user_id, status, entry_key, "
            "step_count, due_at, created_at, updated_at, end_reason, error) "
            f"SELECT %s, a.user_id, %s, a.user_id, 0, %s, %s, %s, '', '' FROM ({audience}) a "
            "WHERE NOT EXISTS (SELECT 1 FROM campaign_cursors c "
            "WHERE c.campaign_id = %s AND c.entry_key = a.user_id)",
            [campaign.pk, Cursor.Status.ACTIVE, stamp, stamp, stamp, *audience_params, campaign.pk],
        )
        entered = max(cursor.rowcount, 0)
    return AudienceChange(entered=entered, exited=exited)


def campaigns_using(segment_ids: set[int]) -> list[Campaign]:
    """Active campaigns whose segments or excluded segments include any of `segment_ids`."""
    names = set(Segment.objects.filter(pk__in=segment_ids).values_list("name", flat=True))
    return [
        c
        for c in Campaign.objects.filter(active=True)
        if names & (set(c.segments) | set(c.exclude_segments))
    ]


def claim_new_cursors(user_ids: list[str], now: datetime) -> list[int]:
    """Claim the users' cursors that have not run a step yet and nobody holds, to start them now
    (claimed, so the schedule's next tick does not hand them out a second time)."""
    unclaimed = Cursor.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        user_id__in=user_ids,
        status=Cursor.Status.ACTIVE,
        step_count=0,
    )
    ids = list(unclaimed.values_list("pk", flat=True))
    if ids:
        lease = timedelta(seconds=settings.SEGFLOW_CLAIM_LEASE_SECONDS)
        Cursor.objects.filter(pk__in=ids).update(claimed_until=now + lease)
    return ids


def end_campaign(campaign: Campaign, now: datetime, reason: str) -> int:
    """Deactivate a campaign and end its active cursors. Returns how many ended."""
    ended = Cursor.objects.filter(campaign=campaign, status=Cursor.Status.ACTIVE).update(
        status=Cursor.Status.ENDED,
        entry_key=None,
        due_at=None,
        ended_at=now,
        updated_at=now,
        end_reason=reason,
    )
    # Finished cursors let go too: a campaign pushed again under this name starts afresh.
    Cursor.objects.filter(campaign=campaign, entry_key__isnull=False).update(entry_key=None)
    Campaign.objects.filter(pk=campaign.pk).update(active=False, removed_at=now, updated_at=now)
    return ended


# ---------------------------------------------------------------------------------------------
# Advancing a cursor.


def claim_due_cursors(now: datetime, limit: int = 500) -> list[int]:
    """Claim up to `limit` due cursors for running now; return their ids.

    Row locks that skip rows other claimers hold (MySQL 8, MariaDB 10.6+) let any number of
    schedulers claim at once without handing out a cursor twice; a claim lasts
    SEGFLOW_CLAIM_LEASE_SECONDS, so a cursor whose worker died is handed out again after it.
    """
    lease = timedelta(seconds=settings.SEGFLOW_CLAIM_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            Cursor.objects.select_for_update(skip_locked=True)
            .filter(status=Cursor.Status.ACTIVE, due_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("due_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Cursor.objects.filter(pk__in=ids).update(claimed_until=now + lease)
    return ids


def history_of(cursor: Cursor) -> list[RecordedStep]:
    return [
        RecordedStep(kind=s.kind, args=s.args, result=s.result, user_snapshot=s.user_snapshot)
        for s in cursor.steps.all()  # in step order (CursorStep.Meta.ordering); may be prefetched
    ]


@dataclass(frozen=True)
class StepOutcome:
    result: object
    recorded_result: object
    due_at: datetime | None = None  # set when the cursor should pause until then


class StepError(Exception):
    """A step could not be performed; the cursor fails with this message."""


def _perform_send_email(
    config: Config,
    cursor: Cursor,
    user: User,
    index: int,
    step: SendEmail,
    now: datetime,
    emails: OutboxWriter,
) -> StepOutcome:
    template = config.templates.get(step.template)
    if template is None:
        raise StepError(
            f"send_email({step.template!r}): no such template in the config "
            f"(known: {', '.join(sorted(config.templates)) or 'none'})"
        )
    origin = EmailOrigin.campaign_step(cursor.campaign.name, cursor.pk, index, step.template)
    row = emails.queue(template, user, origin)
    result = SendEmailResult(
        success=row.status
        in (OutboxEmail.Status.QUEUED, OutboxEmail.Status.SENDING, OutboxEmail.Status.SENT),
        status=row.status,
        reason=row.reason,
        outbox_id=row.pk,
    )
    return StepOutcome(result=result, recorded_result=result.__dict__)


def _perform_wait(
    config: Config,
    cursor: Cursor,
    user: User,
    index: int,
    step: Wait,
    now: datetime,
    emails: OutboxWriter,
) -> StepOutcome:
    return StepOutcome(
        result=None, recorded_result=None, due_at=now + timedelta(seconds=step.seconds)
    )


PERFORMERS: dict[str, Callable[..., StepOutcome]] = {
    SendEmail.kind: _perform_send_email,
    Wait.kind: _perform_wait,
}

CURSOR_FIELDS = [
    "step_count",
    "due_at",
    "claimed_until",
    "updated_at",
    "status",
    "entry_key",
    "ended_at",
    "end_reason",
    "error",
]


def advance_cursor(cursor_id: int, config: Config, now: datetime | None = None) -> str:
    """Run a due cursor's next steps up to its next wait or its end. Returns what happened.

    Safe to call twice, at once, from two workers: the cursor's row is locked and re-checked, and
    every email has a unique outbox key per cursor and step.
    """
    try:
        with transaction.atomic():
            return _advance_locked([cursor_id], config, now).get(cursor_id, "gone")
    except RunawayFlow as exc:
        # Everything that run did was rolled back, its emails included; only the failure stays.
        with transaction.atomic():
            cursor = Cursor.objects.select_for_update().filter(pk=cursor_id).first()
            if cursor is None:
                return "gone"
            failed_at = now or timezone.now()
            end_cursor(cursor, Cursor.Status.FAILED, str(exc), failed_at, error=str(exc))
            cursor.save()
            _log_ended(cursor)
        return "failed"


def advance_cursors(
    cursor_ids: list[int], config: Config, now: datetime | None = None
) -> dict[int, str]:
    """Advance a batch of due cursors in one transaction, with a few statements per cursor
    instead of a few dozen. Returns what happened to each, like `advance_cursor`."""
    try:
        with transaction.atomic():
            outcomes = _advance_locked(cursor_ids, config, now)
    except OperationalError:
        raise  # a lock conflict: the task tries the batch again
    except Exception as exc:
        # One of them loops or breaks, and the batch was rolled back: one by one, so that only
        # that one is held up.
        if not isinstance(exc, RunawayFlow):
            logger.exception(
                "a batch of %s cursors failed; running them one by one", len(cursor_ids)
            )
        outcomes = {}
        for cursor_id in cursor_ids:
            try:
                outcomes[cursor_id] = advance_cursor(cursor_id, config, now)
            except OperationalError:
                raise
            except Exception:
                logger.exception(
                    "cursor %s could not be advanced; its lease hands it out again", cursor_id
                )
                outcomes[cursor_id] = "error"
    return {cursor_id: outcomes.get(cursor_id, "gone") for cursor_id in cursor_ids}


def _advance_locked(cursor_ids: list[int], config: Config, now: datetime | None) -> dict[int, str]:
    user_ids = sorted(
        set(Cursor.objects.filter(pk__in=cursor_ids).values_list("user_id", flat=True))
    )
    # Lock order everywhere: the users, then their cursors; both in id order, so two batches
    # never wait on each other in a circle. (Not the campaign row: MariaDB would lock it too
    # with a join, and every worker would queue behind that one row.)
    users = {
        user.pk: user
        for user in User.objects.select_for_update().filter(pk__in=user_ids).order_by("pk")
    }
    cursors = list(
        Cursor.objects.select_for_update()
        .filter(pk__in=cursor_ids, user_id__in=list(users))
        .prefetch_related("steps")
        .order_by("pk")
    )
    # The time is read once the locks are held: a batch that waited for another worker's
    # must see the steps that worker just made due.
    now = now or timezone.now()
    campaigns = Campaign.objects.in_bulk({cursor.campaign_id for cursor in cursors})
    outcomes: dict[int, str] = {}
    runnable = []
    for cursor in cursors:
        cursor.campaign = campaigns[cursor.campaign_id]
        if cursor.status != Cursor.Status.ACTIVE:
            outcomes[cursor.pk] = "not active"
        elif cursor.due_at is None or cursor.due_at > now:
            outcomes[cursor.pk] = "not due"
        elif (definition := config.campaigns.get(cursor.campaign.name)) is None or (
            definition.flow_fingerprint != cursor.campaign.flow_fingerprint
        ):
            logger.warning(
                "cursor %s left waiting: this process's config does not have the pushed flow of "
                "campaign %r; restart it with the config that was pushed",
                cursor.pk,
                cursor.campaign.name,
            )
            outcomes[cursor.pk] = "config mismatch"
        else:
            runnable.append((cursor, definition))
    if not runnable:
        return outcomes
    emails = OutboxWriter(
        config, [c.pk for c, _ in runnable], [users[c.user_id] for c, _ in runnable]
    )
    steps: list[CursorStep] = []
    for cursor, definition in runnable:
        outcomes[cursor.pk] = _run_steps(
            cursor, users[cursor.user_id], definition, config, now, emails, steps
        )
    CursorStep.objects.bulk_create(steps)
    _save_cursors([cursor for cursor, _ in runnable])
    emails.deliver_after_commit()
    for cursor, _ in runnable:
        if cursor.status in (Cursor.Status.FAILED, Cursor.Status.DIVERGED):
            _log_ended(cursor)
    return outcomes


def _save_cursors(cursors: list[Cursor]) -> None:
    """One plain UPDATE per cursor, sent as a batch (Django's bulk_update builds a CASE per
    field and cursor, and costs more than the statements it saves)."""
    fields = [Cursor._meta.get_field(name) for name in CURSOR_FIELDS]
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(Cursor._meta.db_table)} SET "
        + ", ".join(f"{quote(f.column)} = %s" for f in fields)
        + f" WHERE {quote(Cursor._meta.pk.column)} = %s"
    )
    rows = [
        [f.get_db_prep_save(getattr(cursor, f.attname), connection) for f in fields] + [cursor.pk]
        for cursor in cursors
    ]
    with connection.cursor() as db:
        db.executemany(sql, rows)


def _run_steps(
    cursor: Cursor,
    user: User,
    definition: CampaignDef,
    config: Config,
    now: datetime,
    emails: OutboxWriter,
    steps: list[CursorStep],
) -> str:
    """Replay the cursor's flow and perform its next steps, up to a wait or the end. The cursor
    is changed in memory and its new step records added to `steps`; the caller saves both."""
    cursor.updated_at = now
    cursor.claimed_until = None
    try:
        run = FlowRun(
            definition.flow,
            user_id=user.id,
            attributes=user.attributes or {},
            history=history_of(cursor),
            campaign=definition.name,
        )
    except FlowDiverged as exc:
        end_cursor(cursor, Cursor.Status.DIVERGED, f"the flow changed: {exc}", now)
        return cursor.status
    except FlowFailed as exc:
        end_cursor(cursor, Cursor.Status.FAILED, str(exc), now, error=exc.details)
        return cursor.status

    index = cursor.step_count
    outcome_label = "waiting"
    for _ in range(MAX_STEPS_PER_ADVANCE):
        try:
            next_step = run.next_step()
        except FlowFailed as exc:
            end_cursor(cursor, Cursor.Status.FAILED, str(exc), now, error=exc.details)
            outcome_label = "failed"
            break
        _apply_writes(user, run.pending_writes)
        step: Step | None = next_step.step
        if step is None:
            end_cursor(cursor, Cursor.Status.COMPLETED, "the flow finished", now)
            outcome_label = "completed"
            break
        try:
            outcome = PERFORMERS[step.kind](config, cursor, user, index, step, now, emails)
        except StepError as exc:
            end_cursor(cursor, Cursor.Status.FAILED, str(exc), now, error=str(exc))
            outcome_label = "failed"
            break
        steps.append(
            CursorStep(
                cursor=cursor,
                index=index,
                kind=step.kind,
                args=step.to_record(),
                result=outcome.recorded_result,
                user_snapshot=next_step.user_snapshot,
                created_at=now,
            )
        )
        index += 1
        run.step_done(step, outcome.result)
        if outcome.due_at is not None:
            cursor.due_at = outcome.due_at
            break
    else:
        raise RunawayFlow(
            f"the flow took {MAX_STEPS_PER_ADVANCE} steps without a wait; nothing of them was sent"
        )
    cursor.step_count = index
    _save_writes(user, run.pending_writes, now)
    return outcome_label


def _log_ended(cursor: Cursor) -> None:
    logger.warning(
        "cursor %s (campaign %r, user %r) %s: %s",
        cursor.pk,
        cursor.campaign.name,
        cursor.user_id,
        cursor.status,
        cursor.end_reason,
    )


def end_cursor(cursor: Cursor, status: str, reason: str, now: datetime, error: str = "") -> None:
    """Mark a cursor finished (in memory; the caller saves it)."""
    cursor.status = status
    cursor.due_at = None
    cursor.ended_at = now
    cursor.end_reason = reason
    cursor.error = error
    if status in (Cursor.Status.EXITED, Cursor.Status.ENDED):
        cursor.entry_key = None


def _apply_writes(user: User, writes: dict) -> None:
    if writes:
        user.attributes = {**(user.attributes or {}), **writes}


def _save_writes(user: User, writes: dict, now: datetime) -> None:
    """Store what the flow assigned to ctx.user, and have the user's segments re-evaluated."""
    if not writes:
        return
    from segflow.users import mark_attributes_changed

    mark_attributes_changed(user, now)


def replay_check(cursor: Cursor, definition: CampaignDef) -> str | None:
    """None if the cursor's history replays cleanly on `definition`'s flow, else the reason."""
    try:
        FlowRun(
            definition.flow,
            user_id=cursor.user_id,
            attributes={},
            history=history_of(cursor),
            campaign=definition.name,
        )
    except FlowDiverged as exc:
        return f"the flow changed: {exc}"
    except FlowFailed as exc:
        return f"the changed flow fails on replay: {exc}"
    return None
