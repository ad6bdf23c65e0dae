"""Properties of segment evaluation, on random users and events, on whichever database the run
uses (SQLite, or MariaDB/MySQL through DATABASE_URL).

The per-user answer (what a write or an event runs: `evaluate_users` for one or a few users) is
the set-based answer for everyone (what a push or the schedule runs: `refresh_segment`, range of
user ids by range), for segments of each kind: attribute SQL, event SQL with aggregates over
JSON_EXTRACT, time-parameterised SQL and Django QuerySet evaluators. Both start from the same
stale memberships, and what each reports as changed is what changed.

Every example works inside a savepoint that is rolled back, so examples share the test's
database (and its pushed segments) without seeing each other's rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from segflow.live_config import live_config
from segflow.models import Event, User
from segments.models import SegmentMembership
from segments.services import evaluate_users, refresh_segment

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

CONFIG = """
from datetime import timedelta

config = {
    "segments": {
        # attributes, in SQL
        "pro": {"sql": "SELECT u.id FROM users u "
                       "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'"},
        "high-score": {"sql": "SELECT u.id FROM users u "
                              "WHERE JSON_EXTRACT(u.attributes, '$.score') >= 3"},
        # events: an aggregate over JSON_EXTRACT, and existence with an anti-join
        "big-spenders": {"sql": "SELECT u.id FROM users u JOIN events e ON e.user_id = u.id "
                                "WHERE e.name = 'purchase' GROUP BY u.id "
                                "HAVING SUM(JSON_EXTRACT(e.attributes, '$.amount')) > 100"},
        "browsers": {"sql": "SELECT DISTINCT e.user_id AS id FROM events e "
                            "WHERE e.name = 'click' AND NOT EXISTS (SELECT 1 FROM events p "
                            "WHERE p.user_id = e.user_id AND p.name = 'purchase')"},
        # events in a window that moves with time: a bound datetime parameter
        "recent-buyers": {
            "sql": "SELECT e.user_id AS id FROM events e "
                   "WHERE e.name = 'purchase' AND e.created_at >= %(since)s",
            "params": lambda now: {"since": now - timedelta(days=7)},
            "refresh_every": timedelta(hours=1),
        },
        # Django QuerySets: nested attributes, and a join to events with an exclude
        "vip-in-france": {
            "evaluator": lambda users: users.filter(
                attributes__vip=True, attributes__address__country="FR"
            )
        },
        "free-clickers": {
            "evaluator": lambda users: users.filter(events__name="click").exclude(
                attributes__plan="pro"
            )
        },
    },
}
"""

# ---------------------------------------------------------------------------------------------
# Random users and events.

# Ids with quotes, SQL wildcards, backslashes, case and accent variants, spaces (trailing ones
# too: ids compare exactly, without padding, on every database).
ids = st.text(alphabet=st.sampled_from("aAbBzZ09éE'%_\\- ß"), min_size=1, max_size=6)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10),
    st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 2)),
    st.sampled_from(["", "pro", "Pro", "free", "3", "FR", "true"]),
)
nested = st.one_of(
    anything, st.lists(anything, max_size=2), st.dictionaries(st.just("x"), anything)
)
odd_attributes = st.fixed_dictionaries(
    {},
    optional={
        "plan": st.one_of(st.sampled_from(["pro", "free", "Pro"]), nested),
        "score": st.one_of(st.integers(-2, 6), nested),
        "vip": st.one_of(st.booleans(), nested),
        "address": st.one_of(
            st.fixed_dictionaries({}, optional={"country": st.sampled_from(["FR", "fr", "DE"])}),
            st.fixed_dictionaries({}, optional={"country": nested}),
            nested,
        ),
        "email": st.just("someone@example.com"),
    },
)
# Most users look like what an app sends, so that every segment has members now and then.
usual_attributes = st.fixed_dictionaries(
    {
        "plan": st.sampled_from(["pro", "free"]),
        "score": st.integers(0, 6),
        "vip": st.booleans(),
        "address": st.fixed_dictionaries({"country": st.sampled_from(["FR", "DE"])}),
    }
)
attributes = st.one_of(usual_attributes, odd_attributes)
amounts = st.one_of(
    st.integers(-50, 150),
    st.integers(40, 150),
    st.floats(-50, 150, allow_nan=False).map(lambda x: round(x, 2)),
    st.sampled_from(["60", "abc", None, True]),
    st.dictionaries(st.just("value"), st.integers(0, 200), max_size=1),
)
events = st.lists(
    st.tuples(
        st.sampled_from(["purchase", "click", "signup", "Purchase"]),
        st.fixed_dictionaries({}, optional={"amount": amounts, "sku": st.just("a-1")}),
        st.integers(0, 14 * 24),  # hours before now
    ),
    max_size=5,
)
populations = st.lists(
    st.tuples(ids, attributes, events), min_size=1, max_size=7, unique_by=lambda u: u[0]
)


def memberships(segment_ids) -> set[tuple[int, str]]:
    return set(
        SegmentMembership.objects.filter(segment_id__in=segment_ids).values_list(
            "segment_id", "user_id"
        )
    )


def set_memberships(pairs: set[tuple[int, str]], segment_ids) -> None:
    SegmentMembership.objects.filter(segment_id__in=segment_ids).delete()
    SegmentMembership.objects.bulk_create(
        SegmentMembership(segment_id=s, user_id=u, created_at=NOW) for s, u in pairs
    )


class Pushed(list):
    """The pushed (row, definition) pairs, named shortly when a failing example is printed."""

    def __repr__(self) -> str:
        return f"<pushed segments {', '.join(row.name for row, _ in self)}>"


@pytest.fixture
def segments(write_config, pushed):
    config = write_config(CONFIG)
    pushed(config, now=NOW)
    pairs = Pushed(live_config.segments(config))
    assert sorted(row.name for row, _ in pairs) == sorted(config.segments)
    return pairs


@settings(
    max_examples=60,
    deadline=None,
    # The fixtures run once for all examples: each example rolls back everything it writes.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(population=populations, data=st.data())
def test_the_answer_for_a_few_users_is_the_answer_for_everyone(segments, population, data):
    segment_ids = [row.pk for row, _ in segments]
    user_ids = [user_id for user_id, _, _ in population]
    with transaction.atomic():
        User.objects.bulk_create(
            User(id=user_id, attributes=attrs, created_at=NOW, updated_at=NOW)
            for user_id, attrs, _ in population
        )
        for user_id, _, made in population:
            for name, attrs, hours_ago in made:
                Event.objects.create(
                    user_id=user_id,
                    name=name,
                    attributes=attrs,
                    created_at=NOW - timedelta(hours=hours_ago),
                )
        # Whatever the memberships were before (stale, from older data): both ways start there.
        stale = data.draw(
            st.sets(st.sampled_from([(s, u) for s in segment_ids for u in user_ids])),
            label="memberships before",
        )
        set_memberships(stale, segment_ids)

        # One or a few users at a time, as writes and events do.
        order = data.draw(st.permutations(user_ids), label="evaluation order")
        while order:
            size = data.draw(st.integers(1, 3), label="users at once")
            batch, order = order[:size], order[size:]
            before = memberships(segment_ids)
            changes = evaluate_users(batch, segments, NOW)
            after = memberships(segment_ids)
            assert {u for _, u in before ^ after} <= set(batch), "other users were changed"
            for user_id in batch:
                entered = {s for s, u in after - before if u == user_id}
                left = {s for s, u in before - after if u == user_id}
                change = changes.get(user_id)
                reported = (change.entered, change.left) if change else (set(), set())
                assert reported == (entered, left)
        per_user = memberships(segment_ids)

        # Everyone at once, range of user ids by range.
        set_memberships(stale, segment_ids)
        chunk = data.draw(st.integers(1, len(user_ids) + 1), label="users per range")
        with override_settings(SEGFLOW_SEGMENT_CHUNK_USERS=chunk):
            for row, definition in segments:
                before = memberships([row.pk])
                count = refresh_segment(row, definition, NOW)
                after = memberships([row.pk])
                assert (count.entered, count.left) == (len(after - before), len(before - after))
        everyone = memberships(segment_ids)

        names = {row.pk: row.name for row, _ in segments}
        for segment_id in sorted({s for s, _ in everyone}):
            event(f"{names[segment_id]} has members")
        note(f"per user only: {sorted((names[s], u) for s, u in per_user - everyone)}")
        note(f"everyone only: {sorted((names[s], u) for s, u in everyone - per_user)}")
        assert per_user == everyone
        transaction.set_rollback(True)
