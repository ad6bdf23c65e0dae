"""Many schedulers and workers at once, on MariaDB: no cursor runs one step twice."""

import threading
from collections import Counter

import pytest
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from campaigns.claims import claim_due_cursors
from campaigns.models import Cursor
from campaigns.runner import advance_cursor
from delivery.models import OutboxEmail
from segflow.live_config import live_config
from segflow.models import User

pytestmark = [pytest.mark.mysql_only, pytest.mark.django_db(transaction=True)]

CONFIG = """
def flow(ctx, rt):
    yield rt.send_email("hello")
    yield rt.wait(seconds=0)
    yield rt.send_email("again")

config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>hi</p>"},
                  "again": {"subject": "Again", "html": lambda user: "<p>hi</p>"}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"c": {"segments": ["all"], "behavior": "static", "flow": flow}},
}
"""


def in_threads(count: int, work) -> list:
    results, errors = [], []
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            barrier.wait()
            results.append(work(n))
        except Exception as exc:  # surfaced below, with the thread's error
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


@pytest.fixture
def due_cursors(write_config, pushed, clock):
    pushed(write_config(CONFIG))
    User.objects.bulk_create(
        [User(id=f"u{n}", attributes={"email": f"u{n}@example.com"}) for n in range(300)]
    )
    from segflow.pipeline import refresh_segment
    from segments.models import Segment

    refresh_segment(Segment.objects.get(), live_config.current().segments["all"], clock.now)
    assert Cursor.objects.filter(due_at__lte=clock.now).count() == 300
    clock.stop()  # real time from here: threads see one clock
    return clock


def test_concurrent_claims_hand_out_each_due_cursor_once(due_cursors):
    ids: Counter = Counter()
    # A claimer skips whatever rows others hold locked at that moment, so one round of claims
    # may leave a few due cursors for the next tick: rounds go on until all are handed out.
    for _ in range(5):
        claimed = in_threads(8, lambda n: claim_due_cursors(timezone.now(), limit=60))
        ids.update(cursor_id for batch in claimed for cursor_id in batch)
        if len(ids) == 300:
            break
    assert len(ids) == 300
    assert set(ids.values()) == {1}


def test_a_claim_skips_a_cursor_another_claimer_holds_without_waiting(due_cursors):
    held, done = threading.Event(), threading.Event()
    last = Cursor.objects.order_by("-pk").values_list("pk", flat=True)[0]

    def hold(n: int) -> None:
        with transaction.atomic():
            Cursor.objects.select_for_update().filter(pk=last).get()
            held.set()
            done.wait(timeout=30)

    holder = threading.Thread(target=in_threads, args=(1, hold))
    holder.start()
    try:
        assert held.wait(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        claimed = claim_due_cursors(timezone.now(), limit=300)
    finally:
        done.set()
        holder.join()
        # (The connection outlives the test: later tests that wait for locks get the default.)
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")
    assert len(claimed) == 299
    assert last not in claimed
    assert Cursor.objects.filter(claimed_until__isnull=False).count() == 299


def test_a_claim_reads_only_the_cursors_it_claims(due_cursors):
    # When the claim's UPDATE found its 60 rows of 300 by reading the whole table, it locked
    # each row on the way; two claimers reading at once could each wait for the other's rows
    # and one was rolled back as a deadlock (the concurrent test above, now and then).
    def rows_read() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%%'")
            return sum(int(value) for _, value in cursor.fetchall())

    before = rows_read()
    claimed = claim_due_cursors(timezone.now(), limit=60)
    assert len(claimed) == 60
    # The due index read once for the 60 it claims, then each of those looked up once.
    assert rows_read() - before <= 2 * 60 + 2


def test_concurrent_workers_advancing_the_same_cursors_send_each_step_once(due_cursors):
    ids = list(Cursor.objects.values_list("pk", flat=True))
    config = live_config.current()

    def work(n: int) -> None:
        # Every thread tries every cursor, half of them in the other order.
        order = ids if n % 2 else list(reversed(ids))
        for cursor_id in order:
            advance_cursor(cursor_id, config)

    in_threads(6, work)
    rows = Counter(OutboxEmail.objects.values_list("user_id", "template_name"))
    assert len(rows) == 600  # hello and again, for each of the 300 users
    assert set(rows.values()) == {1}
    assert set(Cursor.objects.values_list("status", flat=True)) == {Cursor.Status.COMPLETED}


def test_concurrent_batches_over_the_same_cursors_send_each_step_once(due_cursors):
    from campaigns.runner import advance_cursors

    ids = list(Cursor.objects.values_list("pk", flat=True))
    config = live_config.current()

    def work(n: int) -> None:
        # Overlapping batches, each thread in its own order: the locks go in id order anyway.
        order = ids[n * 7 :] + ids[: n * 7]
        for start in range(0, len(order), 40):
            advance_cursors(order[start : start + 40], config)

    in_threads(6, work)
    rows = Counter(OutboxEmail.objects.values_list("user_id", "template_name"))
    assert len(rows) == 600
    assert set(rows.values()) == {1}
    assert set(Cursor.objects.values_list("status", flat=True)) == {Cursor.Status.COMPLETED}


def test_concurrent_event_batches_for_the_same_users_neither_deadlock_nor_lose_one(
    write_config, pushed
):
    import random

    from segflow.models import Event
    from segflow.users import record_events

    pushed(write_config(CONFIG))
    users = [f"u{n}" for n in range(30)]

    def work(n: int) -> int:
        shuffled = random.Random(n).sample(users, len(users))
        for _ in range(5):
            record_events([(user_id, "click", {"by": n}) for user_id in shuffled])
        return n

    in_threads(6, work)
    assert Event.objects.count() == 6 * 5 * 30
    assert not Event.objects.filter(processed_at__isnull=True).exists()
    assert set(User.objects.values_list("pk", flat=True)) == set(users)
