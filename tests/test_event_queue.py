"""Events and changed users are queues in the database: workers drain them in batches, each
event processed once, a user's events in the order they were accepted, a bad event holding up
only itself; and a worker keeps its database connection from task to task."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from segflow import users as user_service
from segflow.db import lock_queued
from segflow.models import QUEUE_INDEX, Event, User
from segflow.pipeline import drain_events, drain_users, tick
from segments.models import SegmentMembership

from .conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
def receipt(user, event):
    return f"<p>order {event.get('n')}</p>"

config = {
    "segments": {
        "buyers": {"sql": "SELECT e.user_id AS id FROM events e WHERE e.name = 'purchase'"},
        "pro": {"sql": "SELECT u.id FROM users u "
                       "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'"},
    },
    "transactions": {"receipt": {"event": "purchase", "subject": "Receipt", "html": receipt}},
}
"""


@pytest.fixture
def queued(settings, write_config, pushed):
    """Production mode without a worker: writes leave their events and users in the queues."""
    pushed(write_config(CONFIG))
    settings.SEGFLOW_TASKS_INLINE = False
    settings.CELERY_BROKER_URL = ""
    handed: list[str] = []

    from celery import current_app

    app = current_app._get_current_object()
    original = app.send_task
    app.send_task = lambda name, *a, **k: handed.append(name)
    yield handed
    app.send_task = original


def hold_event(event_id: int, until: Callable[[], object]) -> threading.Thread:
    """Another worker ("A"): a thread that has claimed the event (locked its row) and keeps it
    while `until` runs, in the same transaction. Returns once the lock is taken."""
    claimed = threading.Event()

    def worker_a() -> None:
        try:
            with transaction.atomic():
                Event.objects.select_for_update().get(pk=event_id)
                claimed.set()
                until()
        finally:
            connection.close()

    thread = threading.Thread(target=worker_a)
    thread.start()
    assert claimed.wait(30)
    return thread


def unprocessed() -> int:
    return Event.objects.filter(processed_at__isnull=True).count()


def test_a_drain_processes_every_waiting_event_in_batches(queued, settings):
    settings.SEGFLOW_DRAIN_BATCH_SIZE = 7
    user_service.record_events(
        [(f"u{n % 5}", "purchase", {"n": n, "email": None}) for n in range(40)]
    )
    for n in range(5):
        user_service.put_user(f"u{n}", {"email": f"u{n}@example.com", "plan": "pro"})
    assert unprocessed() == 40
    assert User.objects.filter(evaluation_pending=True).count() == 5
    assert set(queued) == {"segflow.drain_events", "segflow.drain_users"}
    assert drain_users() == 5
    assert drain_events() == 40
    assert unprocessed() == 0
    assert len(sent(template_name="receipt")) == 40


def test_a_drain_of_users_at_different_versions_evaluates_each_once(queued):
    """Users written once and written several times are evaluated in one batch: each ends in
    the segments their last write puts them in, and none is left waiting."""
    user_service.put_user("ann", {"email": "ann@example.com", "plan": "free"})
    user_service.put_user("ann", {"email": "ann@example.com", "plan": "pro"})
    user_service.put_user("bob", {"email": "bob@example.com", "plan": "pro"})
    user_service.put_user("cat", {"email": "cat@example.com"})
    user_service.put_user("cat", {"email": "cat@example.com"})
    user_service.put_user("cat", {"email": "cat@example.com", "plan": "free"})
    assert sorted(User.objects.values_list("version", flat=True)) == [1, 2, 3]
    assert drain_users() == 3
    assert not User.objects.filter(evaluation_pending=True).exists()
    pro = SegmentMembership.objects.filter(segment__name="pro").values_list("user_id", flat=True)
    assert sorted(pro) == ["ann", "bob"]


def test_a_failing_event_is_held_back_and_holds_up_only_itself(
    queued, settings, clock, monkeypatch
):
    """A bug that fails one event's processing (injected here) must not stop the queue."""
    from segflow import pipeline

    real = pipeline.send_transactions

    def failing_for_exploding_events(config, users, events):
        if any(event.attributes.get("explode") for event in events):
            raise RuntimeError("a bug met this event")
        return real(config, users, events)

    monkeypatch.setattr(pipeline, "send_transactions", failing_for_exploding_events)
    settings.SEGFLOW_INLINE_TASKS_RAISE = False
    user_service.put_user("ann", {"email": "ann@example.com"})
    user_service.put_user("bob", {"email": "bob@example.com"})
    user_service.record_event("ann", "purchase", {"n": 1, "explode": True})
    user_service.record_event("ann", "purchase", {"n": 2})
    user_service.record_event("bob", "purchase", {"n": 3})
    drain_events()
    # The bad event waits; the rest, ann's later purchase included, went on.
    assert unprocessed() == 1
    assert sorted(sent(template_name="receipt")) == ["receipt", "receipt"]
    assert drain_events() == 0  # held back, not tried again at once
    clock.advance(seconds=settings.SEGFLOW_SWEEP_AFTER_SECONDS + 1)
    drain_events()
    assert unprocessed() == 1  # tried again after the delay; it still fails


def test_the_embedded_tick_drains_what_the_writes_left(settings, write_config, pushed):
    pushed(write_config(CONFIG))
    settings.SEGFLOW_TASKS_INLINE = False
    from unittest import mock

    with mock.patch("segflow.dispatch.enqueue"):  # handed to a broker no worker reads
        user_service.put_user("ann", {"email": "ann@example.com", "plan": "pro"})
        user_service.record_event("ann", "purchase", {"n": 1})
    assert unprocessed() == 1
    settings.SEGFLOW_TASKS_INLINE = True
    tick()
    assert unprocessed() == 0
    assert sent("ann") == ["receipt"]
    assert not User.objects.get(pk="ann").evaluation_pending


@pytest.mark.mysql_only
def test_a_users_later_events_wait_while_another_worker_holds_an_earlier_one(queued):
    """Order per user: worker A has claimed ann's first event but not reached her yet; worker B
    drains the rest and must leave ann's later events for after A."""
    user_service.put_user("ann", {"email": "ann@example.com"})
    user_service.put_user("bob", {"email": "bob@example.com"})
    drain_users()
    first = user_service.record_event("ann", "purchase", {"n": 1})
    user_service.record_event("ann", "purchase", {"n": 2})
    user_service.record_event("bob", "purchase", {"n": 3})
    release = threading.Event()
    thread = hold_event(first.pk, until=lambda: release.wait(30))
    try:
        drain_events()
        # bob's went on; ann's second waits behind her first, which A holds.
        assert sent("bob") == ["receipt"]
        assert sent("ann") == []
        assert Event.objects.filter(processed_at__isnull=True, user_id="ann").count() == 2
    finally:
        release.set()
        thread.join()
    drain_events()
    assert unprocessed() == 0
    receipts = list(
        Event.objects.filter(user_id="ann").order_by("pk").values_list("processed_at", flat=True)
    )
    assert receipts[0] <= receipts[1]
    assert sent("ann") == ["receipt", "receipt"]


@pytest.mark.mysql_only
def test_a_drain_waits_for_the_older_event_it_held_a_later_one_back_for(queued):
    """Two drains: A has claimed ann's first event, B only her second, which B must hold back.
    A may already have looked past it, so B keeps it until A is done and then processes it."""
    user_service.put_user("ann", {"email": "ann@example.com"})
    drain_users()
    first = user_service.record_event("ann", "purchase", {"n": 1})
    user_service.record_event("ann", "purchase", {"n": 2})

    def processed_after_a_while() -> None:
        threading.Event().wait(0.3)
        Event.objects.filter(pk=first.pk).update(processed_at=timezone.now())

    thread = hold_event(first.pk, until=processed_after_a_while)
    try:
        assert drain_events() == 1
    finally:
        thread.join()
    assert unprocessed() == 0
    assert sent("ann") == ["receipt"]


def test_with_a_backlog_a_drain_takes_its_users_later_events_along(queued, settings):
    """A batch takes the oldest events, then the same users' later ones from further down the
    queue: each user is evaluated once for all of them, the others' events wait their turn."""
    settings.SEGFLOW_DRAIN_BATCH_SIZE = 2
    settings.SEGFLOW_DRAIN_LOOKAHEAD = 100
    for name in ("ann", "bob", "cat", "dan"):
        user_service.put_user(name, {"email": f"{name}@example.com"})
    drain_users()
    order = ["ann", "bob", "cat", "ann", "cat", "ann", "dan"]
    stored = user_service.record_events(
        [(user, "purchase", {"n": n}) for n, user in enumerate(order)]
    )
    drain_events()
    assert unprocessed() == 0
    batch_of = {event.pk: event.processed_at for event in Event.objects.all()}
    # The first batch: ann's and bob's (the oldest two), and ann's two later ones; then cat's two.
    first, second, third = (batch_of[stored[n].pk] for n in (0, 2, 6))
    assert len({first, second, third}) == 3
    assert [batch_of[e.pk] for e in stored if e.user_id in ("ann", "bob")] == [first] * 4
    assert [batch_of[e.pk] for e in stored if e.user_id == "cat"] == [second] * 2
    assert sent("ann") == ["receipt"] * 3


def test_without_look_ahead_a_batch_is_the_oldest_events_alone(queued, settings):
    settings.SEGFLOW_DRAIN_BATCH_SIZE = 2
    settings.SEGFLOW_DRAIN_LOOKAHEAD = 0
    for name in ("ann", "bob"):
        user_service.put_user(name, {"email": f"{name}@example.com"})
    drain_users()
    stored = user_service.record_events(
        [(user, "purchase", {"n": n}) for n, user in enumerate(["ann", "bob", "ann"])]
    )
    drain_events()
    batch_of = dict(Event.objects.values_list("pk", "processed_at"))
    assert batch_of[stored[0].pk] == batch_of[stored[1].pk] != batch_of[stored[2].pk]


@pytest.mark.mysql_only
def test_a_drain_processes_a_users_events_up_to_one_another_worker_holds(queued, settings):
    """A drain took ann's first and third events; another worker holds her second. The first is
    processed now, the third after the second."""
    settings.SEGFLOW_DRAIN_BATCH_SIZE = 1
    settings.SEGFLOW_DRAIN_LOOKAHEAD = 10
    user_service.put_user("ann", {"email": "ann@example.com"})
    drain_users()
    first, second, third = user_service.record_events(
        [("ann", "purchase", {"n": n}) for n in (1, 2, 3)]
    )
    processed_during_hold: dict[int, object] = {}

    def hold_then_process() -> None:
        # Held while this drain processes ann's first event (her lock waits on the drain), then
        # processed, as the other worker would.
        threading.Event().wait(0.5)
        processed_during_hold.update(
            Event.objects.filter(user_id="ann").values_list("pk", "processed_at")
        )
        Event.objects.filter(pk=second.pk).update(processed_at=timezone.now())

    thread = hold_event(second.pk, until=hold_then_process)
    try:
        drain_events()
    finally:
        thread.join()
    assert processed_during_hold[first.pk] is not None
    assert processed_during_hold[third.pk] is None
    assert unprocessed() == 0
    assert len(sent("ann")) == 2  # the first and third: the second was the other worker's


def test_locking_picked_events_takes_those_still_queued_in_id_order(queued):
    events = user_service.record_events([("ann", "click", {"n": n}) for n in range(5)])
    Event.objects.filter(pk=events[3].pk).update(processed_at=timezone.now())
    picked = [events[n].pk for n in (4, 0, 3, 2)]
    with transaction.atomic():
        locked = lock_queued(Event, picked, QUEUE_INDEX, "processed_at")
    assert locked == [events[0].pk, events[2].pk, events[4].pk]


@pytest.mark.mysql_only
def test_locking_picked_events_skips_those_another_worker_holds(queued):
    events = user_service.record_events([("ann", "click", {"n": n}) for n in range(4)])
    taken: list[int] = []

    def lock_the_rest() -> None:
        # Another connection: a worker that picked all four while this one holds the second.
        try:
            with transaction.atomic():
                taken.extend(
                    lock_queued(Event, [e.pk for e in events], QUEUE_INDEX, "processed_at")
                )
        finally:
            connection.close()

    def run_other_worker() -> None:
        other = threading.Thread(target=lock_the_rest)
        other.start()
        other.join(30)

    hold_event(events[1].pk, until=run_other_worker).join()
    assert taken == [events[0].pk, events[2].pk, events[3].pk]


@pytest.mark.mysql_only
def test_locking_picked_events_reads_only_those_in_a_long_queue(queued):
    """With a backlog, locking a batch's picked events costs a lookup each, not a read of the
    whole queue (MariaDB once read 200,000 queued events to lock a few hundred)."""
    events = user_service.record_events([(f"u{n % 50}", "click", {}) for n in range(5000)])
    picked = [event.pk for event in events[1000:4000:10]]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE events")
        cursor.fetchall()
    with transaction.atomic():
        before = rows_read()
        locked = lock_queued(Event, picked, QUEUE_INDEX, "processed_at")
        read = rows_read() - before
    assert locked == picked
    # A few reads a lookup (the id, the index entry, the next one); the queue holds 5,000.
    assert read < 4 * len(picked), f"{read} rows read to lock {len(picked)} events"


def rows_read() -> int:
    """Rows and index entries this connection has read so far (MariaDB's handler counters)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_key', "
            "'Handler_read_next', 'Handler_read_rnd_next')"
        )
        return sum(int(value) for _, value in cursor.fetchall())


@pytest.mark.mysql_only
@hypothesis_settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=60),
    st.integers(min_value=2, max_value=4),
    st.integers(min_value=1, max_value=9),
    st.sampled_from([0, 3, 100]),
)
def test_concurrent_drainers_process_each_event_exactly_once(
    queued, settings, users, workers, size, lookahead
):
    """For any sequence of events over a few users, any number of drainers, any batch size and
    look-ahead: every event is processed once and sends exactly one receipt, and a user's
    events are processed in the order they were accepted."""
    Event.objects.all().delete()
    from delivery.models import OutboxEmail

    OutboxEmail.objects.all().delete()
    settings.SEGFLOW_DRAIN_BATCH_SIZE = size
    settings.SEGFLOW_DRAIN_LOOKAHEAD = lookahead
    stored = user_service.record_events(
        [(f"p{user}", "purchase", {"n": n}) for n, user in enumerate(users)]
    )
    errors: list[Exception] = []

    def drain() -> None:
        try:
            drain_events()
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=drain) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert unprocessed() == 0
    receipts = dict(
        OutboxEmail.objects.filter(template_name="receipt").values_list("event_id", "pk")
    )
    assert sorted(receipts) == sorted(event.pk for event in stored)
    # A receipt is written while its user is locked, so their ids follow the processing order.
    for user in set(users):
        theirs = [receipts[event.pk] for event in stored if event.user_id == f"p{user}"]
        assert theirs == sorted(theirs), f"p{user}'s events were processed out of order"


@pytest.mark.mysql_only
def test_a_worker_keeps_its_database_connection_from_task_to_task():
    """Celery's Django fixup closes the connection around every task unless told to reuse it;
    a worker that connects for every task spends its time connecting."""
    from celery.fixups.django import DjangoWorkerFixup

    from segflow_project.celery import app

    fixup = DjangoWorkerFixup(app)
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False))
    connection.ensure_connection()
    opened = connection.connection
    for _ in range(50):
        fixup.on_task_prerun(sender=task)
        User.objects.count()
        fixup.on_task_postrun(sender=task)
    assert connection.connection is opened


WITH_CAMPAIGN = """
def hello(ctx, rt):
    yield rt.send_email("hello")

config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>hi</p>"}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["all"], "behavior": "static", "flow": hello},
                  "again": {"segments": ["all"], "behavior": "static", "flow": hello}},
}
"""


def test_events_of_users_whose_cursor_has_not_run_a_step_are_processed(
    settings, write_config, pushed
):
    """A cursor that has not run its first step yet (step_count 0) is not waiting for an event:
    looking for waits must not trip over it (on MySQL, 0 - 1 overflows an unsigned column)."""
    from unittest import mock

    from campaigns.models import Cursor

    pushed(write_config(WITH_CAMPAIGN.replace('"again"', '"not-yet"')))
    for n in range(300):  # cursors that ran a step
        user_service.put_user(f"u{n}", {"email": f"u{n}@example.com"})
    pushed(write_config(WITH_CAMPAIGN))
    settings.SEGFLOW_TASKS_INLINE = False
    with mock.patch("segflow.dispatch.enqueue"):  # no worker runs the new cursors
        for n in range(300):
            user_service.put_user(f"u{n}", {"email": f"u{n}@example.com", "v": 2})
        drain_users()
        assert Cursor.objects.filter(step_count=0).count() == 300
        user_service.record_events([(f"u{n}", "click", {}) for n in range(300)])
        assert drain_events() == 300
    assert unprocessed() == 0
