"""Segment evaluation: only what a change can affect, one query, ids bound, time-based refresh."""

from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection

from segflow import users as user_service
from segflow.pipeline import process_events
from segments.models import Segment, SegmentMembership

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from datetime import timedelta

config = {
    "segments": {
        "pro": {"sql": "SELECT u.id FROM users u "
                       "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'"},
        "vip": {"evaluator": lambda users: users.filter(attributes__vip=True)},
        "buyers": {
            "sql": "SELECT DISTINCT e.user_id AS id FROM events e WHERE e.name = 'purchase'"
        },
        "clickers": {"evaluator": lambda users: users.filter(events__name="click")},
        "veterans": {
            "sql": "SELECT u.id FROM users u WHERE u.created_at < %(cutoff)s",
            "params": lambda now: {"cutoff": now - timedelta(days=30)},
            "refresh_every": timedelta(hours=6),
        },
    },
}
"""


@pytest.fixture
def setup(write_config, pushed, clock):
    pushed(write_config(CONFIG))
    return clock


def members(name):
    return set(
        SegmentMembership.objects.filter(segment__name=name).values_list("user_id", flat=True)
    )


@contextmanager
def statements():
    """The SQL text and parameters as sent to the database driver, before any interpolation."""
    seen = []

    def record(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


def test_what_each_segment_reads_is_known_at_push(setup):
    reads = {s.name: (s.reads_users, s.reads_events) for s in Segment.objects.all()}
    assert reads["pro"] == (True, False)
    assert reads["vip"] == (True, False)
    assert reads["buyers"] == (False, True)
    assert reads["clickers"] == (True, True)


def test_an_attribute_write_evaluates_the_attribute_segments_in_one_query(setup):
    user_service.put_user("ann", {"plan": "free"})
    with statements() as seen:
        user_service.put_user("ann", {"plan": "pro", "vip": True})
    segment_queries = [sql for sql, _ in seen if " AS segment_id, " in sql]
    assert len(segment_queries) == 1
    assert "'pro'" in segment_queries[0]
    assert "purchase" not in segment_queries[0]  # buyers reads only events: not touched
    assert "ann" in members("pro") and "ann" in members("vip")


def test_an_event_evaluates_only_the_segments_that_read_events(setup):
    user_service.put_user("bob", {"plan": "pro"})
    with statements() as seen:
        user_service.record_event("bob", "purchase", {"amount": 5})
    segment_queries = [sql for sql, _ in seen if " AS segment_id, " in sql]
    assert len(segment_queries) == 1
    assert "purchase" in segment_queries[0]
    assert "'pro'" not in segment_queries[0]  # attribute-only segments are not touched
    assert members("buyers") == {"bob"} and members("pro") == {"bob"}


def test_a_batch_of_events_evaluates_all_its_users_in_one_query(setup):
    from segflow.models import Event

    for user_id in ("cat", "dan", "eve"):
        user_service.put_user(user_id, {})
    user_service.record_event("eve", "purchase", {})  # already a buyer before the batch
    with statements() as seen:
        user_service.record_events(
            [
                ("cat", "purchase", {}),
                ("dan", "click", {}),
                ("cat", "click", {}),
                ("newbie", "purchase", {}),  # an unknown user, created by its event
            ]
        )
    segment_queries = [sql for sql, _ in seen if " AS segment_id, " in sql]
    # Once for the users whose attributes were never evaluated (newbie), once for the rest.
    assert len(segment_queries) == 2
    assert members("buyers") == {"cat", "eve", "newbie"}
    assert members("clickers") == {"cat", "dan"}
    assert not Event.objects.filter(processed_at__isnull=True).exists()


def test_the_user_id_is_a_bound_parameter_never_sql_text(setup):
    nasty = "x' OR '1'='1"
    user_service.put_user("innocent", {"plan": "pro"})
    with statements() as seen:
        user_service.put_user(nasty, {"plan": "free"})
        user_service.record_event(nasty, "purchase", {})
    for sql, _ in seen:
        assert nasty not in sql
    assert any(nasty in (params or ()) for sql, params in seen if " AS segment_id, " in sql)
    assert members("pro") == {"innocent"} and members("buyers") == {nasty}


def test_time_based_segments_are_refreshed_by_the_schedule(setup):
    user_service.put_user("old-timer", {})
    assert members("veterans") == set()
    setup.advance_and_tick(days=29, every=timedelta(hours=6))
    assert members("veterans") == set()
    setup.advance_and_tick(days=1, hours=6, every=timedelta(hours=6))
    assert members("veterans") == {"old-timer"}


def test_a_time_based_segment_is_refreshed_no_more_often_than_asked(setup):
    refreshed = Segment.objects.get(name="veterans").refreshed_at
    setup.advance_and_tick(hours=5)
    assert Segment.objects.get(name="veterans").refreshed_at == refreshed
    setup.advance_and_tick(hours=1)
    assert Segment.objects.get(name="veterans").refreshed_at > refreshed


def test_event_segments_follow_events_and_deletes(setup):
    user_service.record_event("carl", "click", {})
    assert members("clickers") == {"carl"}
    event = user_service.record_event("carl", "purchase", {})
    process_events([event.pk])  # processing again changes nothing
    assert members("buyers") == {"carl"}
    user_service.delete_user("carl")
    assert members("buyers") == set() and members("clickers") == set()
