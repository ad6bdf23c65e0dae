"""Running cursors: replaying a cursor's flow and performing its next steps, a batch at a time.

A batch locks its users, then their cursors (both in id order), replays each cursor's flow over
its recorded steps (`campaigns.flow`), performs the next steps through the step registry
(`campaigns.steps`) up to a wait or the end, and stores the new step records, the cursors and the
emails (`delivery.outbox`) with a few statements for the whole batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from delivery.models import OutboxEmail
from delivery.outbox import EmailOrigin, OutboxWriter
from segflow.attributes import AttributeView
from segflow.config import CampaignDef, Config, ConfigError, user_zone
from segflow.db import insert_rows, lock_users, update_rows
from segflow.models import Event, User
from segflow.users import mark_attributes_changed
from segflow.versions import config_of

from . import tallies
from .flow import FlowDiverged, FlowFailed, FlowRun, RecordedStep
from .models import Campaign, Cursor, CursorStep
from .steps import (
    STEP_KINDS,
    FlowEvent,
    NotYet,
    SendEmailResult,
    Step,
    StepError,
    StepOutcome,
)

logger = logging.getLogger(__name__)

# A flow that takes this many steps without ever waiting is looping: stop it, sending nothing.
MAX_STEPS_PER_ADVANCE = 25


class Advanced(StrEnum):
    """What advancing a cursor did."""

    WAITING = "waiting"
    COMPLETED = Cursor.Status.COMPLETED.value
    FAILED = Cursor.Status.FAILED.value
    DIVERGED = Cursor.Status.DIVERGED.value
    NOT_ACTIVE = "not active"
    NOT_DUE = "not due"
    CONFIG_MISMATCH = "config mismatch"
    GONE = "gone"
    ERROR = "error"


class RunawayFlow(Exception):
    pass


class _Performer:
    """What a step of one cursor may do (see `campaigns.steps.StepPerformer`).

    `due_since` is when the step came due: an email to a user with no address waits for one
    until SEGFLOW_WAIT_FOR_ADDRESS_SECONDS after it (see `send_email`)."""

    def __init__(
        self,
        config: Config,
        cursor: Cursor,
        user: User,
        index: int,
        now: datetime,
        emails: OutboxWriter,
        due_since: datetime,
        definition: CampaignDef | None = None,
    ) -> None:
        self.config, self.cursor, self.user, self.index = config, cursor, user, index
        self.now, self.emails, self.due_since = now, emails, due_since
        self.definition = definition
        # The outbox row this step queued, until the batch's rows are inserted and it has an id.
        self.unsaved: OutboxEmail | None = None

    @property
    def campaign(self) -> str:
        return self.cursor.campaign.name

    @property
    def user_id(self) -> str:
        return self.user.pk

    def send_email(self, template: str) -> SendEmailResult | NotYet:
        content = self.config.templates.get(template)
        if content is None:
            raise StepError(
                f"send_email({template!r}): no such template in the config "
                f"(known: {', '.join(sorted(self.config.templates)) or 'none'})"
            )
        origin = EmailOrigin.campaign_step(
            self.cursor.campaign.name,
            self.cursor.pk,
            self.index,
            template,
            config_version=self.config.version,
        )
        not_yet = self._waiting_for_window(origin) or self._waiting_for_address(origin)
        if not_yet is not None:
            return not_yet
        row = self.emails.queue(content, self.user, origin)
        if row.pk is None:
            self.unsaved = row
        return SendEmailResult(
            success=row.status
            in (OutboxEmail.Status.QUEUED, OutboxEmail.Status.SENDING, OutboxEmail.Status.SENT),
            status=row.status,
            reason=row.reason,
            outbox_id=row.pk,
        )

    def _waiting_for_window(self, origin: EmailOrigin) -> NotYet | None:
        """Outside the campaign's send window, in the user's time zone, the email waits for the
        window to open: the cursor is due again then, and the step is tried as if for the first
        time (the user's zone and the window are read again)."""
        window = self.definition.send_window if self.definition is not None else None
        if window is None or origin.key in self.emails.existing:
            return None
        zone = user_zone(
            self.user.attributes or {}, self.config.timezone_attribute, self.config.default_timezone
        )
        opening = window.next_opening(self.now, zone)
        if opening is None:
            return None
        return NotYet(
            retry_at=opening,
            reason=f"outside the send window ({window}, {zone.key}); it opens at "
            f"{opening:%Y-%m-%d %H:%M} UTC",
        )

    def event_mark(self) -> dict[str, Any]:
        """The user's newest event id, and those up to it not processed yet. The user is locked,
        and events are stored and processed under the same lock: every event processed after
        this is one of `pending` or newer than `last`."""
        events = Event.objects.filter(user_id=self.user.pk)
        last = events.order_by("-pk").values_list("pk", flat=True).first() or 0
        pending = list(
            events.filter(processed_at__isnull=True).order_by("pk").values_list("pk", flat=True)
        )
        return {"last": last, "pending": pending}

    def find_event(
        self,
        name: str,
        mark: dict[str, Any],
        until: datetime,
        where: Callable[[AttributeView], Any] | None,
    ) -> FlowEvent | None:
        candidates = (
            Event.objects.filter(
                user_id=self.user.pk,
                name=name,
                processed_at__isnull=False,
                processed_at__lte=until,
            )
            .filter(Q(pk__gt=mark.get("last", 0)) | Q(pk__in=mark.get("pending") or []))
            .order_by("pk")
            .only("pk", "name", "attributes", "timestamp")
        )
        for event in candidates.iterator(chunk_size=200):
            attributes = AttributeView(event.attributes or {})
            try:
                if where is not None and not where(attributes):
                    continue
            except Exception as exc:
                raise StepError(f"wait_for_event({name!r}): where= raised {exc!r}") from exc
            return FlowEvent(event.pk, event.name, attributes, event.timestamp)
        return None

    def _waiting_for_address(self, origin: EmailOrigin) -> NotYet | None:
        """A user with no email address yet (an event created them before the app sent their
        profile) gets a while to get one: the step is tried again every
        SEGFLOW_WAIT_FOR_ADDRESS_RETRY_SECONDS (and when the user changes, if it is the first
        step) until SEGFLOW_WAIT_FOR_ADDRESS_SECONDS after it came due, then skipped. An address
        that is there but not one bare address is skipped at once, with the reason: waiting
        would only delay saying what is wrong with it."""
        given = (self.user.attributes or {}).get("email")
        missing = given is None or (isinstance(given, str) and not given.strip())
        if not missing or origin.key in self.emails.existing:
            return None
        deadline = self.due_since + timedelta(seconds=settings.SEGFLOW_WAIT_FOR_ADDRESS_SECONDS)
        if self.now >= deadline:
            return None
        retry = timedelta(seconds=max(1, settings.SEGFLOW_WAIT_FOR_ADDRESS_RETRY_SECONDS))
        return NotYet(
            retry_at=min(self.now + retry, deadline),
            reason=f"waiting for an email address until {deadline:%Y-%m-%d %H:%M:%S} UTC",
        )


def came_due_at(cursor: Cursor) -> datetime:
    """When the cursor's next step came due: when its last recorded step was performed, or
    later if that one paused the flow (a wait) or was resumed later (a wait for an event); for
    a cursor with no steps, when it began."""
    records = list(cursor.steps.all())  # prefetched by the runner
    if not records:
        return cursor.created_at
    last = records[-1]
    step_class = STEP_KINDS.get(last.kind)
    try:
        step = step_class(**last.args)
        return step.resumed_at(last.result) or step.next_due(last.created_at)
    except Exception:  # a kind or arguments this version does not know
        return last.created_at


def history_of(cursor: Cursor) -> list[RecordedStep]:
    return [
        RecordedStep(
            kind=s.kind,
            args=s.args,
            result=s.result,
            user_snapshot=s.user_snapshot,
            at=s.created_at,
        )
        for s in cursor.steps.all()  # in step order (CursorStep.Meta.ordering); may be prefetched
    ]


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


def advance_cursor(cursor_id: int, config: Config, now: datetime | None = None) -> Advanced:
    """Run a due cursor's next steps up to its next wait or its end. Returns what happened.

    Safe to call twice, at once, from two workers: the cursor's row is locked and re-checked, and
    every email has a unique outbox key per cursor and step.
    """
    try:
        with transaction.atomic():
            return _advance_locked([cursor_id], config, now).get(cursor_id, Advanced.GONE)
    except RunawayFlow as exc:
        # Everything that run did was rolled back, its emails included; only the failure stays.
        with transaction.atomic():
            cursor = Cursor.objects.select_for_update().filter(pk=cursor_id).first()
            if cursor is None:
                return Advanced.GONE
            failed_at = now or timezone.now()
            end_cursor(cursor, Cursor.Status.FAILED, str(exc), failed_at, error=str(exc))
            cursor.save()
            _log_ended(cursor)
        return Advanced.FAILED


def advance_cursors(
    cursor_ids: list[int], config: Config, now: datetime | None = None
) -> dict[int, Advanced]:
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
                outcomes[cursor_id] = Advanced.ERROR
    return {cursor_id: outcomes.get(cursor_id, Advanced.GONE) for cursor_id in cursor_ids}


def _advance_locked(
    cursor_ids: list[int], config: Config, now: datetime | None
) -> dict[int, Advanced]:
    user_ids = sorted(
        set(Cursor.objects.filter(pk__in=cursor_ids).values_list("user_id", flat=True))
    )
    # Lock order everywhere: the users, then their cursors; both in id order, so two batches
    # never wait on each other in a circle. (Not the campaign row: MariaDB would lock it too
    # with a join, and every worker would queue behind that one row.)
    users = lock_users(user_ids)
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
    outcomes: dict[int, Advanced] = {}
    runnable = []
    flow_configs: dict[int, Config] = {}  # cursors pinned to an older version's flow
    versions: dict[int, Config | ConfigError] = {}
    for cursor in cursors:
        cursor.campaign = campaigns[cursor.campaign_id]
        if cursor.status != Cursor.Status.ACTIVE:
            outcomes[cursor.pk] = Advanced.NOT_ACTIVE
        elif cursor.due_at is None or cursor.due_at > now:
            outcomes[cursor.pk] = Advanced.NOT_DUE
        elif cursor.pinned_version not in (None, config.version):
            pinned = _pinned_flow(cursor, versions)
            if pinned is None:
                outcomes[cursor.pk] = Advanced.CONFIG_MISMATCH
            else:
                flow_configs[cursor.pk] = pinned[1]
                runnable.append((cursor, pinned[0]))
        elif (
            definition := config.campaign_as_pushed(
                cursor.campaign.name, cursor.campaign.flow_fingerprint
            )
        ) is None:
            logger.warning(
                "cursor %s left waiting: this process's config does not have the pushed flow of "
                "campaign %r; restart it with the config that was pushed",
                cursor.pk,
                cursor.campaign.name,
            )
            outcomes[cursor.pk] = Advanced.CONFIG_MISMATCH
        else:
            runnable.append((cursor, definition))
    if not runnable:
        return outcomes
    emails = OutboxWriter(
        config,
        [users[c.user_id] for c, _ in runnable],
        cursor_ids=[c.pk for c, _ in runnable],
        campaign=True,
    )
    steps: list[CursorStep] = []
    runs = [
        (
            cursor,
            _run_steps(
                cursor,
                users[cursor.user_id],
                definition,
                flow_configs.get(cursor.pk, config),
                now,
                emails,
                steps,
            ),
        )
        for cursor, definition in runnable
    ]
    # Each run goes up to an email it queued, then waits: the emails of all the batch's cursors
    # are inserted in one statement, and each run goes on with its email's id.
    while runs:
        waiting = []
        for cursor, run in runs:
            try:
                next(run)
            except StopIteration as done:
                outcomes[cursor.pk] = done.value
            else:
                waiting.append((cursor, run))
        emails.flush()
        runs = waiting
    insert_rows(steps)
    tallies.note_steps(steps)
    _save_cursors([cursor for cursor, _ in runnable])
    emails.deliver_after_commit()
    for cursor, _ in runnable:
        if cursor.status in (Cursor.Status.FAILED, Cursor.Status.DIVERGED):
            _log_ended(cursor)
    return outcomes


def _pinned_flow(
    cursor: Cursor, versions: dict[int, Config | ConfigError]
) -> tuple[CampaignDef, Config] | None:
    """The flow of the version a cursor is pinned to, with that version's config (its
    templates); None, logged, when this process cannot load it. `versions`: those the batch
    has looked up already."""
    number = cursor.pinned_version
    if number not in versions:
        try:
            versions[number] = config_of(number)
        except ConfigError as exc:
            versions[number] = exc
    pinned = versions[number]
    if isinstance(pinned, ConfigError):
        logger.warning(
            "cursor %s left waiting: it runs the flow of version %s, which does not load here: %s",
            cursor.pk,
            number,
            pinned,
        )
        return None
    definition = pinned.campaigns.get(cursor.campaign.name)
    if definition is None:
        logger.warning(
            "cursor %s left waiting: version %s has no campaign %r",
            cursor.pk,
            cursor.pinned_version,
            cursor.campaign.name,
        )
        return None
    return definition, pinned


def _save_cursors(cursors: list[Cursor]) -> None:
    """The batch's cursors, locked, in one statement where the database allows it."""
    update_rows(cursors, CURSOR_FIELDS)
    tallies.note_saved(cursors)


def _run_steps(
    cursor: Cursor,
    user: User,
    definition: CampaignDef,
    config: Config,
    now: datetime,
    emails: OutboxWriter,
    steps: list[CursorStep],
) -> Generator[None, None, Advanced]:
    """Replay the cursor's flow and perform its next steps, up to a wait or the end. The cursor
    is changed in memory and its new step records added to `steps`; the caller saves both.

    A generator: it pauses after each email it queues until the caller has inserted the
    batch's new outbox rows (`OutboxWriter.flush`), and returns what happened."""
    cursor.updated_at = now
    cursor.claimed_until = None
    try:
        run = FlowRun(
            definition.flow,
            user_id=user.id,
            attributes=user.attributes or {},
            history=history_of(cursor),
            campaign=definition.name,
            now=now,
        )
    except FlowDiverged as exc:
        end_cursor(cursor, Cursor.Status.DIVERGED, f"the flow changed: {exc}", now)
        return Advanced(cursor.status)
    except FlowFailed as exc:
        end_cursor(cursor, Cursor.Status.FAILED, str(exc), now, error=exc.details)
        return Advanced(cursor.status)

    index = cursor.step_count
    due_since = came_due_at(cursor)
    if run.pending is not None:
        try:
            resumed = _resume_pending(run, cursor, user, config, now, emails, due_since)
        except StepError as exc:
            end_cursor(cursor, Cursor.Status.FAILED, str(exc), now, error=str(exc))
            return Advanced.FAILED
        if resumed is not None:
            cursor.due_at = resumed
            return Advanced.WAITING
        due_since = now
    outcome_label = Advanced.WAITING
    for _ in range(MAX_STEPS_PER_ADVANCE):
        try:
            next_step = run.next_step()
        except FlowFailed as exc:
            end_cursor(cursor, Cursor.Status.FAILED, str(exc), now, error=exc.details)
            outcome_label = Advanced.FAILED
            break
        _apply_writes(user, run.pending_writes)
        step: Step | None = next_step.step
        if step is None:
            end_cursor(cursor, Cursor.Status.COMPLETED, "the flow finished", now)
            outcome_label = Advanced.COMPLETED
            break
        performer = _Performer(config, cursor, user, index, now, emails, due_since, definition)
        try:
            outcome: StepOutcome = step.perform(performer)
        except StepError as exc:
            end_cursor(cursor, Cursor.Status.FAILED, str(exc), now, error=str(exc))
            outcome_label = Advanced.FAILED
            break
        if performer.unsaved is not None:
            yield  # until the caller inserted the batch's new rows
            outcome = _with_outbox_id(outcome, performer.unsaved.pk)
        if not outcome.recorded:
            # Not performed yet: nothing is recorded, and on the next run the flow is replayed
            # up to here and yields this step again.
            cursor.due_at = outcome.due_at
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
                config_version=config.version,
            )
        )
        index += 1
        due_since = now  # the next step came due now, unless this one pauses the flow
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


def _resume_pending(
    run: FlowRun,
    cursor: Cursor,
    user: User,
    config: Config,
    now: datetime,
    emails: OutboxWriter,
    due_since: datetime,
) -> datetime | None:
    """Finish the step the flow waits at (a wait for an event): record its result in its
    record, and give it to the flow. Returns when to look again if it is not finished yet.

    The record is changed under the user's and the cursor's locks, once: the next run finds it
    finished, so the same event never resumes the flow twice."""
    pending = run.pending
    assert pending is not None and pending.recorded.at is not None  # (history_of gives it)
    index = cursor.step_count - 1
    performer = _Performer(config, cursor, user, index, now, emails, due_since)
    outcome = pending.step.resume(performer, pending.recorded.result, pending.recorded.at)
    if not outcome.recorded:
        return outcome.due_at
    CursorStep.objects.filter(cursor_id=cursor.pk, index=index).update(
        result=outcome.recorded_result
    )
    run.step_done(pending.step, outcome.result)
    return None


def _with_outbox_id(outcome: StepOutcome, outbox_id: int | None) -> StepOutcome:
    """The outcome of a send_email step whose row has just been inserted, with its id."""
    result = dataclasses.replace(outcome.result, outbox_id=outbox_id)
    return dataclasses.replace(outcome, result=result, recorded_result=dataclasses.asdict(result))


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
