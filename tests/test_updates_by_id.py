"""Updates of rows picked by id read only those rows, however small the table (MariaDB).

Given `id IN (...)` for a fifth of a small table, MariaDB reads the whole primary key and locks
each row on its way: two workers doing so at once can each hold what the other waits for, and
one is rolled back as a deadlock (it happened to the claims of due cursors, tests/test_claims.py).
Every UPDATE by a list of ids names the primary key (`segflow.db.update_through_index`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from campaigns import waits
from campaigns.models import Cursor
from delivery import sending
from delivery.models import OutboxEmail
from segflow.db import update_through_index
from segflow.live_config import live_config
from segflow.models import User
from segflow.pipeline import advance_cursors, refresh_segment, sweep
from segments.models import Segment

USERS = 300
PICKED = 60

CONFIG = """
from datetime import timedelta

def flow(ctx, rt):
    yield rt.wait_for_event("purchase", timeout=timedelta(days=1))
    yield rt.send_email("hello")

config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>hi</p>"}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"c": {"segments": ["all"], "behavior": "static", "flow": flow,
                        "goal": "signup"}},
}
"""


@contextmanager
def rows_read_by(pattern: str) -> Iterator[list[int]]:
    """The rows the server read for each statement matching `pattern` run inside the block."""
    counts: list[int] = []
    matches = re.compile(pattern).search

    def handler_reads(raw_connection) -> int:
        with raw_connection.cursor() as cursor:
            cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%'")
            return sum(int(value) for _, value in cursor.fetchall())

    def measure(execute, sql, params, many, context):
        if not matches(sql):
            return execute(sql, params, many, context)
        raw = context["connection"].connection
        first = handler_reads(raw)
        before = handler_reads(raw)
        own = before - first  # (what one reading of the counters adds to them)
        try:
            return execute(sql, params, many, context)
        finally:
            counts.append(handler_reads(raw) - before - own)

    with connection.execute_wrapper(measure):
        yield counts


@pytest.mark.django_db
def test_an_update_of_no_ids_updates_nothing_and_sends_nothing(django_assert_num_queries):
    User.objects.create(id="u1", attributes={})
    with django_assert_num_queries(0):
        assert update_through_index(User.objects.filter(pk__in=[]), "PRIMARY", version=9) == 0
    assert User.objects.get().version != 9


def mysql_only(test):
    return pytest.mark.mysql_only(pytest.mark.django_db(transaction=True)(test))


@pytest.fixture
def waiting_cursors(write_config, pushed, clock):
    """USERS users, each with a cursor waiting for a purchase."""
    pushed(write_config(CONFIG))
    User.objects.bulk_create(
        [User(id=f"u{n}", attributes={"email": f"u{n}@example.com"}) for n in range(USERS)]
    )
    refresh_segment(Segment.objects.get(), live_config.current().segments["all"], clock.now)
    advance_cursors(list(Cursor.objects.values_list("pk", flat=True)))
    assert Cursor.objects.filter(due_at__gt=clock.now).count() == USERS
    return clock


@mysql_only
def test_waking_cursors_reads_only_theirs(waiting_cursors):
    now = waiting_cursors.now
    picked = {f"u{n}": {"purchase"} for n in range(PICKED)}
    with rows_read_by(r"^UPDATE `campaign_cursors`") as reads, transaction.atomic():
        woken = waits.wake_waiting(picked, now)
    assert len(woken) == PICKED
    assert Cursor.objects.filter(due_at=now).count() == PICKED
    assert reads and max(reads) <= PICKED + 2, reads


@mysql_only
def test_converting_cursors_reads_only_theirs(waiting_cursors):
    now = waiting_cursors.now
    picked = {f"u{n}": {"signup"} for n in range(PICKED)}
    with rows_read_by(r"^UPDATE `campaign_cursors`") as reads, transaction.atomic():
        converted = waits.convert_goal_reached(live_config.current(), picked, now)
    assert converted == PICKED
    assert Cursor.objects.filter(status=Cursor.Status.CONVERTED).count() == PICKED
    assert reads and max(reads) <= PICKED + 2, reads


@pytest.fixture
def outbox(clock):
    """USERS outbox rows, sent a while ago."""
    User.objects.bulk_create([User(id=f"u{n}", attributes={}) for n in range(USERS)])
    long_ago = clock.now - timedelta(days=1)
    OutboxEmail.objects.bulk_create(
        OutboxEmail(
            key=f"k{n}",
            user_id=f"u{n}",
            to_address=f"u{n}@example.com",
            template_name="hello",
            status=OutboxEmail.Status.SENT,
            created_at=long_ago,
            updated_at=long_ago,
        )
        for n in range(USERS)
    )
    return clock


def the_first(count: int) -> list[int]:
    return list(OutboxEmail.objects.order_by("pk").values_list("pk", flat=True)[:count])


@mysql_only
def test_the_sweep_stamps_only_the_emails_it_hands_out(outbox):
    retry_at = outbox.now - timedelta(minutes=1)
    OutboxEmail.objects.filter(pk__in=the_first(PICKED)).update(
        status=OutboxEmail.Status.QUEUED, next_attempt_at=retry_at
    )
    with rows_read_by(r"^UPDATE `outbox` (FORCE INDEX \(`PRIMARY`\) )?SET `swept_at`") as reads:
        assert sweep(timezone.now()) == PICKED
    assert OutboxEmail.objects.filter(swept_at__isnull=False).count() == PICKED
    assert reads and max(reads) <= PICKED + 2, reads


@mysql_only
def test_marking_stale_sends_unknown_reads_only_theirs(outbox):
    OutboxEmail.objects.filter(pk__in=the_first(PICKED)).update(status=OutboxEmail.Status.SENDING)
    with rows_read_by(
        r"^UPDATE `outbox` (FORCE INDEX \(`PRIMARY`\) )?SET `status` = %s, `reason`"
    ) as reads:
        assert sending.mark_stale_sending(timezone.now()) == PICKED
    assert OutboxEmail.objects.filter(status=OutboxEmail.Status.UNKNOWN).count() == PICKED
    assert reads and max(reads) <= PICKED + 2, reads


@mysql_only
def test_sending_again_by_hand_reads_only_the_emails_chosen(outbox):
    chosen = the_first(PICKED)
    OutboxEmail.objects.update(status=OutboxEmail.Status.FAILED, attempts=1)
    again = r"^UPDATE `outbox` (FORCE INDEX \(`PRIMARY`\) )?SET `status` = %s, `reason` = %s, `next"
    with rows_read_by(again) as reads:
        assert sending.send_again(chosen) == PICKED
    assert reads and max(reads) <= PICKED + 2, reads
    assert OutboxEmail.objects.filter(status=OutboxEmail.Status.FAILED).count() == USERS - PICKED
