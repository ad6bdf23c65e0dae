"""How a change moves through segflow: a write or an event, then segments, then campaigns.

Each function here is one unit of background work, safe to run twice (every task may be retried
or swept up again). Tasks and the embedded ticker call these; nothing here knows which runs it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Min, Q
from django.utils import timezone

from campaigns import audience, claims, runner, waits
from delivery import sending
from delivery.models import OutboxEmail
from segments import services as segments
from segments.models import Segment
from transactions.services import send_transactions

from .config import Config, SegmentDef
from .db import lock_queued, lock_users, rows_through_index, update_through_index
from .dispatch import drain_started, enqueue, enqueue_in_batches, ring_again, ring_all
from .live_config import live_config
from .models import QUEUE_INDEX, Event, User
from .upkeep import after_tick

logger = logging.getLogger(__name__)


def _evaluate_users(
    users: list[User], config: Config, now: datetime, *, attributes: bool, events: bool
) -> None:
    """Re-evaluate the users' segments that read their attributes and/or their events, then
    their campaigns; a few statements for all of them."""
    chosen = [
        (row, d)
        for row, d in live_config.segments(config)
        if (attributes and row.reads_users) or (events and row.reads_events)
    ]
    changes = segments.evaluate_users([user.pk for user in users], chosen, now)
    audience.reconcile_users(
        {user_id: set(change.segment_ids) for user_id, change in changes.items()}, now
    )
    new_cursors = claims.claim_new_cursors([user.pk for user in users], now)
    if new_cursors:
        transaction.on_commit(lambda: hand_out_cursors(new_cursors))
    if attributes:
        # Only where no write came since the user was read (their version is the one evaluated).
        # One condition per version, not one per user: Django copies every condition of a
        # query as it builds it, and a batch has hundreds of users but few versions.
        by_version: dict[int, list[str]] = {}
        for user in users:
            by_version.setdefault(user.version, []).append(user.pk)
        evaluated = Q()
        for version, ids in by_version.items():
            evaluated |= Q(version=version, pk__among=ids)
        User.objects.filter(evaluated).update(evaluation_pending=False)


def evaluate_user(user_id: str) -> None:
    """After a user's attributes changed: their attribute segments, then their campaigns."""
    evaluate_users([user_id])


def evaluate_users(user_ids: list[str]) -> None:
    """After users' attributes changed: their attribute segments, then their campaigns."""
    config, now = live_config.sync(), timezone.now()
    if not live_config.is_live(config):
        return  # left pending: the schedule hands them out again
    with transaction.atomic():
        users = [u for u in lock_users(user_ids).values() if u.evaluation_pending]
        if users:
            _evaluate_users(users, config, now, attributes=True, events=False)


def process_events(event_ids: list[int]) -> None:
    """After events: their transactional emails, then the users' event segments and campaigns.

    A batch is one transaction, its users locked in id order, with a few statements for all of
    its events. If it fails, its events are processed one by one, so one bad event holds up
    only itself (it is tried again SEGFLOW_SWEEP_AFTER_SECONDS later). Events left for after an
    older event of their user that another process has in hand are tried again once it is done.
    """
    config = live_config.sync()
    if not live_config.is_live(config):
        return  # left pending: the schedule hands them out again
    left = list(event_ids)
    for attempt in range(DEFERRED_ATTEMPTS):
        now = timezone.now()
        try:
            with transaction.atomic():
                done = _process_events(left, config, now)
        except OperationalError:
            raise  # a lock conflict: the task tries the batch again
        except Exception:
            if len(left) == 1:
                Event.objects.filter(pk__in=left).update(swept_at=now)
                raise
            logger.exception("a batch of %s events failed; processing them one by one", len(left))
            _process_one_by_one(left, config, now)
            return
        processed = set(done)
        left = list(
            Event.objects.filter(
                pk__in=[pk for pk in left if pk not in processed], processed_at__isnull=True
            ).values_list("pk", flat=True)
        )
        if not left:
            return
        time.sleep(0.01 * (attempt + 1))  # the other process holds their users: it is at work
    # Still behind another process's events: the schedule's next drain takes them.


# How often `process_events` tries again the events it had to leave for another process's.
DEFERRED_ATTEMPTS = 20


def _process_events(event_ids: list[int], config: Config, now: datetime) -> list[int]:
    """Process these events; returns the ids of those processed. An event is left for later when
    an older event of its user is not processed yet (a worker has it in hand): events of a user
    are processed in the order they were accepted."""
    user_ids = sorted(
        set(Event.objects.filter(pk__among=event_ids).values_list("user_id", flat=True))
    )
    users = lock_users(user_ids)
    # Read after the locks: an event another worker processed meanwhile is left alone.
    events = list(
        Event.objects.filter(
            pk__among=event_ids, processed_at__isnull=True, user_id__among=list(users)
        ).order_by("pk")
    )
    if not events:
        return []
    behind = _behind_older_events(events)
    if behind:
        events = [event for event in events if event.pk not in behind]
        if not events:
            return []
    send_transactions(config, users, events)
    # Before the users' campaigns are evaluated: goals count for cursors already there.
    woken = claims.claim_woken(waits.events_processed(config, events, now), now)
    if woken:
        transaction.on_commit(lambda: hand_out_cursors(woken))
    touched = [users[user_id] for user_id in dict.fromkeys(e.user_id for e in events)]
    # Users whose own attribute evaluation is still pending get it now, too.
    pending = [user for user in touched if user.evaluation_pending]
    if pending:
        _evaluate_users(pending, config, now, attributes=True, events=True)
    rest = [user for user in touched if not user.evaluation_pending]
    if rest:
        _evaluate_users(rest, config, now, attributes=False, events=True)
    done = [event.pk for event in events]
    # (Each row was locked through the queue's index: looked up again by id, no other row is.)
    update_through_index(Event.objects.filter(pk__among=done), "PRIMARY", processed_at=now)
    return done


def _behind_older_events(events: list[Event]) -> set[int]:
    """The ids among `events` that come after an unprocessed event of their user that is not
    among them (claimed by another worker that has not reached its users' locks yet)."""
    ids = [event.pk for event in events]
    oldest_other = dict(
        Event.objects.filter(
            processed_at__isnull=True,
            pk__lt=ids[-1],
            swept_at__isnull=True,  # held back after failing: it does not hold up the rest
            user_id__among={event.user_id for event in events},
        )
        .exclude(pk__among=ids)
        .values_list("user_id")
        .annotate(first=Min("pk"))
        .order_by()
    )
    return {
        event.pk
        for event in events
        if event.user_id in oldest_other and event.pk > oldest_other[event.user_id]
    }


def drain_events() -> int:
    """Process unprocessed events, oldest first, SEGFLOW_DRAIN_BATCH_SIZE to a transaction (with
    their users' later events, see `_claim_events`), until none is left or SEGFLOW_DRAIN_SECONDS
    have passed. Workers share the queue: each claims the next batch that no other has locked
    (`SKIP LOCKED`). Returns how many were processed."""
    drain_started("events")
    config = live_config.sync()
    if not live_config.is_live(config):
        return 0  # left pending: the tick rings again
    deadline = time.monotonic() + settings.SEGFLOW_DRAIN_SECONDS
    size = settings.SEGFLOW_DRAIN_BATCH_SIZE
    processed = 0
    while True:
        now = timezone.now()
        claimed: list[int] = []
        held_back = False
        try:
            with transaction.atomic():
                claimed = _claim_events(now, size)
                done = _process_events(claimed, config, now) if claimed else []
                held_back = len(done) < len(claimed)
        except OperationalError:
            raise  # a lock conflict: the task tries again
        except Exception:
            logger.exception("a batch of %s events failed; processing them one by one", size)
            done = _process_one_by_one(claimed, config, now)
        processed += len(done)
        # Events held back behind an older one of their user that another worker has in hand
        # are this drain's to finish: that worker may already have looked past them.
        if len(claimed) < size and not held_back:
            return processed
        if time.monotonic() > deadline:
            ring_again("events")  # the rest goes to the next drain task
            return processed
        if held_back:
            time.sleep(0.01)  # the other worker is at work on their users


def _claim_events(now: datetime, size: int) -> list[int]:
    """Lock the next `size` unprocessed events no other worker holds, oldest first, then the later
    ones of the same users among the next SEGFLOW_DRAIN_LOOKAHEAD: with a backlog, a user's
    events are then evaluated together instead of once a batch each. An event whose processing
    failed is held back for SEGFLOW_SWEEP_AFTER_SECONDS."""
    before = now - timedelta(seconds=settings.SEGFLOW_SWEEP_AFTER_SECONDS)
    pending = Event.objects.filter(
        Q(swept_at__isnull=True) | Q(swept_at__lte=before), processed_at__isnull=True
    ).order_by("pk")
    claimed = rows_through_index(
        pending.select_for_update(skip_locked=True).values_list("pk", "user_id")[:size],
        QUEUE_INDEX,
    )
    ids = [pk for pk, _ in claimed]
    lookahead = settings.SEGFLOW_DRAIN_LOOKAHEAD
    if len(claimed) < size or lookahead <= 0:
        return ids
    # Read without locks, then lock what was picked: locking the whole window would keep other
    # workers off events this batch does not take.
    users = {user_id for _, user_id in claimed}
    later = [
        pk
        for pk, user_id in pending.filter(pk__gt=ids[-1]).values_list("pk", "user_id")[:lookahead]
        if user_id in users
    ]
    ids += lock_queued(Event, later, QUEUE_INDEX, "processed_at")
    return sorted(ids)


def _process_one_by_one(event_ids: list[int], config: Config, now: datetime) -> list[int]:
    done: list[int] = []
    for event_id in event_ids:
        try:
            with transaction.atomic():
                done += _process_events([event_id], config, now)
        except OperationalError:
            raise
        except Exception:
            logger.exception("event %s could not be processed; trying it again later", event_id)
            Event.objects.filter(pk=event_id).update(swept_at=now)
    return done


def drain_users() -> int:
    """Evaluate users whose attributes changed, SEGFLOW_DRAIN_BATCH_SIZE to a transaction, until
    none is left or SEGFLOW_DRAIN_SECONDS have passed; as `drain_events`."""
    drain_started("users")
    config = live_config.sync()
    if not live_config.is_live(config):
        return 0
    deadline = time.monotonic() + settings.SEGFLOW_DRAIN_SECONDS
    size = settings.SEGFLOW_DRAIN_BATCH_SIZE
    evaluated = 0
    while True:
        now = timezone.now()
        with transaction.atomic():
            users = list(
                User.objects.select_for_update(skip_locked=True)
                .filter(evaluation_pending=True)
                .order_by("evaluation_pending", "updated_at")[:size]
            )
            if users:
                users.sort(key=lambda user: user.pk)
                _evaluate_users(users, config, now, attributes=True, events=False)
        evaluated += len(users)
        if len(users) < size:
            return evaluated
        if time.monotonic() > deadline:
            ring_again("users")
            return evaluated


def hand_out_cursors(cursor_ids: list[int]) -> int:
    """Hand claimed cursors to `advance_cursors`, SEGFLOW_BATCH_SIZE to a task. Those that could
    not be handed out (the broker is down, or their inline run failed) are released at once, so
    the next tick claims them again instead of waiting out SEGFLOW_CLAIM_LEASE_SECONDS. Returns
    how many were handed out."""
    left = enqueue_in_batches("advance_cursors", cursor_ids)
    if left:
        try:
            claims.release(left)
        except Exception:
            # The database is down too: the claims lapse with their lease.
            logger.exception("could not release the claims of %s cursors", len(left))
    return len(cursor_ids) - len(left)


def advance_cursors(cursor_ids: list[int]) -> dict[int, str]:
    return runner.advance_cursors(cursor_ids, live_config.sync())


def deliver_emails(outbox_ids: list[int]) -> dict[int, str]:
    return sending.deliver_emails(outbox_ids, live_config.sync())


def refresh_segment(
    row: Segment,
    definition: SegmentDef,
    now: datetime,
    id_range: segments.IdRange | None = None,
    *,
    on_range: segments.OnRange | None = None,
):
    """Re-evaluate a whole segment (or the users in `id_range`) and bring the campaigns that use
    it up to date for the same users. `on_range` hears of each range of users done."""
    count = segments.refresh_segment(row, definition, now, id_range, on_range=on_range)
    changes = {
        campaign.name: audience.reconcile_campaign(campaign, now, id_range=id_range)
        for campaign in audience.campaigns_using({row.pk})
    }
    return count, changes


def _live_segment(segment_id: int) -> tuple[Segment, SegmentDef] | None:
    config = live_config.sync()
    row = Segment.objects.filter(pk=segment_id).first()
    if row is None or not live_config.is_live(config):
        return None
    definition = config.segment_as_pushed(row.name, row.fingerprint)
    return None if definition is None else (row, definition)


def refresh_time_segment(segment_id: int) -> None:
    """Re-evaluate one segment whose answer changes with time, claimed by the schedule: at once
    if it has one range of users (SEGFLOW_SEGMENT_CHUNK_USERS), else one task per range."""
    ranges = segments.user_id_ranges()
    if len(ranges) > 1:
        for low, high in ranges:
            handed = enqueue("refresh_segment_range", segment_id, low, high)
            if not handed and not settings.SEGFLOW_TASKS_INLINE:
                break  # the broker is down: the segment is refreshed one refresh_every later
        return
    refresh_segment_range(segment_id, None, None)


def refresh_segment_range(segment_id: int, low: str | None, high: str | None) -> None:
    """Re-evaluate one segment for the users whose ids are in [low, high)."""
    live = _live_segment(segment_id)
    if live is None:
        return
    with transaction.atomic():
        refresh_segment(*live, timezone.now(), (low, high))


def run_due_cursors(now: datetime | None = None, batch: int = 500, batches: int = 20) -> int:
    """Claim due cursors in batches and hand them to workers, SEGFLOW_BATCH_SIZE to a task.
    Returns how many were handed out; if the broker refuses them, the claims are released and
    the rest is left to the next tick."""
    now = now or timezone.now()
    total = 0
    for _ in range(batches):
        ids = claims.claim_due_cursors(now, limit=batch)
        handed = hand_out_cursors(ids)
        total += handed
        if len(ids) < batch or (handed < len(ids) and not settings.SEGFLOW_TASKS_INLINE):
            break
    return total


@dataclass
class TickReport:
    refreshed_segments: list[str] = field(default_factory=list)
    cursors_started: int = 0
    swept: int = 0
    config_is_live: bool = True

    def __str__(self) -> str:
        names = f" ({', '.join(self.refreshed_segments)})" if self.refreshed_segments else ""
        return (
            f"refreshed {len(self.refreshed_segments)} time-based segment(s){names}, "
            f"started {self.cursors_started} due cursor(s), swept up {self.swept} missed task(s)"
        )


def tick(now: datetime | None = None) -> TickReport:
    """All work that is due: time-based segments, due cursors, and work whose task was lost."""
    now = now or timezone.now()
    config = live_config.sync()
    report = TickReport(config_is_live=live_config.is_live(config))
    if report.config_is_live:
        for row in segments.claim_due_refreshes(now):
            enqueue("refresh_time_segment", row.pk)
            report.refreshed_segments.append(row.name)
    report.swept = sweep(now)
    drain_queues()
    report.cursors_started = run_due_cursors(now)
    after_tick(now)  # the admin's figures: the tick is recorded, counts are folded
    return report


def drain_queues() -> None:
    """Events and users the writes' own doorbells missed (a lost task, a broker that was down,
    an event held back after failing): drained here in the embedded default, handed to a
    worker with a broker."""
    if settings.SEGFLOW_TASKS_INLINE:
        for drain in (drain_events, drain_users):
            try:
                drain()
            except Exception:
                logger.exception("%s failed; the next tick tries again", drain.__name__)
        return
    ring_all()


def sweep(now: datetime) -> int:
    """Hand out again the emails whose after-commit task never ran (a crash, a lost message).

    Each email handed out is stamped `swept_at` and is not handed out again for another sweep
    delay: under a backlog, work waiting in the queue is not queued again and again. (Events
    and users are queues of their own: `drain_queues`.)
    """
    before = now - timedelta(seconds=settings.SEGFLOW_SWEEP_AFTER_SECONDS)
    # Emails: retries that are due, first sends whose task was lost, and rows a dead sender left
    # in `sending` (marked `unknown`, never sent again: see delivery/sending.py).
    sending.mark_stale_sending(now)
    emails = sending.due_retry_ids(now, not_swept_since=before)
    update_through_index(OutboxEmail.objects.filter(pk__in=emails), "PRIMARY", swept_at=now)
    # What the broker does not take keeps its mark: a sweep SEGFLOW_SWEEP_AFTER_SECONDS later
    # hands it out again.
    enqueue_in_batches("deliver_emails", emails)
    return len(emails)
