"""Properties of campaigns end to end: random sequences of API calls and of time passing.

A few users are written (PUT, PATCH, DELETE) and send events (one at a time and in batches)
through the HTTP API, which moves them in and out of the segments of a static and a dynamic
campaign; the clock moves on with the schedule ticking, and a worker now and then runs a cursor
again (a retried task). After every operation:

- a user holds at most one active cursor per campaign, and that cursor holds its entry key; a
  static campaign never takes a user in twice;
- one outbox row at most per cursor and step, and so per step of a user's cursor;
- every campaign email in the outbox is a send step its cursor recorded (same user, campaign,
  step and template, and the step's result names the row), and every recorded send has its row;
- a cursor's steps are recorded one after the other, and a step after a wait is performed no
  sooner than the wait allows, however often a worker runs the cursor;
- memberships are up to date (what the segments' queries answer now), and a user in a campaign's
  audience has their place in it: an active cursor of a dynamic campaign is never left running
  for a user who no longer matches.

Each example starts from no users at the same moment; the pushed config is shared.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.core import mail
from django.db import connection
from django.db.models import F
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from campaigns.models import Campaign, Cursor, CursorStep
from delivery.models import OutboxEmail
from segflow.live_config import live_config
from segflow.models import User
from segflow.pipeline import advance_cursors
from segments.models import Segment, SegmentMembership
from segments.services import matching_segments_of

from .conftest import START

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
def drip(ctx, rt):
    yield rt.send_email("one")
    yield rt.wait(hours=6)
    yield rt.send_email("two")
    yield rt.wait(days=1)
    if ctx.user.plan == "pro":
        yield rt.send_email("three")

def nudge(ctx, rt):
    result = yield rt.send_email("nudge")
    # Two nudges put the user in an excluded segment: the flow's own write ends its cursor.
    ctx.user.nudges = (ctx.user.nudges or 0) + 1
    yield rt.wait(hours=2)
    if result.success:
        yield rt.send_email("again")
    yield rt.wait(hours=12)
    yield rt.send_email("last")

html = lambda user: "<p>hi</p>"
config = {
    "templates": {
        name: {"subject": name, "html": html}
        for name in ("one", "two", "three", "nudge", "again", "last")
    },
    "segments": {
        "pro": {"sql": "SELECT u.id FROM users u "
                       "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'"},
        "buyers": {"sql": "SELECT e.user_id AS id FROM events e WHERE e.name = 'purchase' "
                          "GROUP BY e.user_id "
                          "HAVING SUM(JSON_EXTRACT(e.attributes, '$.amount')) > 50"},
        "eu": {"evaluator": lambda users: users.filter(attributes__eu=True)},
        "unsubscribed": {"evaluator": lambda users: users.filter(attributes__unsubscribed=True)},
        "nudged-twice": {"sql": "SELECT u.id FROM users u "
                                "WHERE JSON_EXTRACT(u.attributes, '$.nudges') >= 2"},
    },
    "campaigns": {
        "welcome": {"segments": ["pro"], "behavior": "static", "flow": drip},
        "buyer-nudge": {"segments": ["buyers", "eu"],
                        "exclude_segments": ["unsubscribed", "nudged-twice"],
                        "behavior": "dynamic", "flow": nudge},
    },
}
"""

USERS = ("ann", "Ann", "b'o%b")  # ids differing in case only, and with SQL's special characters

user_ids = st.sampled_from(USERS)
emails = st.sampled_from(["x@example.com", "x@example.com", "  X@Example.com ", ""])
attributes = st.one_of(
    # mostly users who match something ...
    st.fixed_dictionaries(
        {"email": emails, "plan": st.sampled_from(["pro", "free"]), "eu": st.just(True)},
        optional={"unsubscribed": st.booleans(), "nudges": st.integers(0, 2)},
    ),
    # ... and anything else
    st.fixed_dictionaries(
        {},
        optional={
            "email": emails,
            "plan": st.sampled_from(["pro", "free"]),
            "eu": st.booleans(),
            "unsubscribed": st.booleans(),
            "nudges": st.integers(0, 2),
        },
    ),
)
patches = st.dictionaries(
    st.sampled_from(["plan", "eu", "unsubscribed", "nudges"]),
    st.one_of(st.none(), st.sampled_from(["pro", "free"]), st.booleans(), st.integers(0, 2)),
    min_size=1,
    max_size=2,
)
events = st.tuples(
    user_ids, st.sampled_from(["purchase", "purchase", "click"]), st.sampled_from([10, 60, 60])
)


@pytest.fixture
def setup(write_config, pushed, clock):
    config = write_config(CONFIG)
    pushed(config)
    return config, clock


def _rows(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def test_random_writes_events_and_time_keep_every_cursor_and_email_in_order(setup, api):
    config, clock = setup
    campaigns = {c.name: c for c in Campaign.objects.all()}
    assert sorted(campaigns) == ["buyer-nudge", "welcome"]
    segment_names = dict(Segment.objects.values_list("pk", "name"))

    class Campaigns(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            User.objects.all().delete()  # events, memberships, cursors, steps, outbox with it
            mail.outbox.clear()
            clock.move_to(START)
            self.existing: set[str] = set()

        @initialize(everyone=st.tuples(*(attributes for _ in USERS)))
        def users_arrive(self, everyone):
            for user_id, attrs in zip(USERS, everyone, strict=True):
                self.put_user(user_id, attrs)

        # -- operations --------------------------------------------------------------------

        @rule(user_id=user_ids, attrs=attributes)
        def put_user(self, user_id, attrs):
            response = api.put(f"/api/users/{quote(user_id)}", {"attributes": attrs}, format="json")
            assert response.status_code == (200 if user_id in self.existing else 201)
            self.existing.add(user_id)

        @rule(user_id=user_ids, patch=patches)
        def patch_user(self, user_id, patch):
            response = api.patch(
                f"/api/users/{quote(user_id)}", {"attributes": patch}, format="json"
            )
            assert response.status_code == (200 if user_id in self.existing else 404)

        @rule(event=events)
        def post_event(self, event):
            user_id, name, amount = event
            response = api.post(
                f"/api/users/{quote(user_id)}/events",
                {"name": name, "attributes": {"amount": amount}},
                format="json",
            )
            assert response.status_code == 201
            self.existing.add(user_id)

        @rule(batch=st.lists(events, min_size=1, max_size=4))
        def post_events(self, batch):
            body = [{"user_id": u, "name": n, "attributes": {"amount": a}} for u, n, a in batch]
            response = api.post("/api/events", {"events": body}, format="json")
            assert response.status_code == 201
            self.existing.update(u for u, _, _ in batch)

        @rule(user_id=user_ids)
        def delete_user(self, user_id):
            response = api.delete(f"/api/users/{quote(user_id)}")
            assert response.status_code == (204 if user_id in self.existing else 404)
            self.existing.discard(user_id)

        @rule(hours=st.sampled_from([1, 2, 5, 7, 13, 30]))
        def time_passes(self, hours):
            clock.advance_and_tick(every=timedelta(hours=3), hours=hours)

        @rule(data=st.data())
        def a_worker_runs_a_cursor_again(self, data):
            ids = list(Cursor.objects.order_by("pk").values_list("pk", flat=True))
            if ids:
                advance_cursors([data.draw(st.sampled_from(ids), label="cursor")])

        # -- what must hold after every one of them ----------------------------------------

        @invariant()
        def one_active_cursor_per_user_and_campaign(self):
            active = Cursor.objects.filter(status=Cursor.Status.ACTIVE)
            counts = Counter(active.values_list("user_id", "campaign_id"))
            assert [key for key, n in counts.items() if n > 1] == []
            assert not active.exclude(entry_key=F("user_id")).exists()
            # A static campaign takes a user in once, whatever they do afterwards.
            static = Counter(
                Cursor.objects.filter(campaign=campaigns["welcome"]).values_list(
                    "user_id", flat=True
                )
            )
            assert [user for user, n in static.items() if n > 1] == []

        @invariant()
        def one_email_per_cursor_and_step(self):
            duplicates = _rows(
                "SELECT cursor_id, step_index, COUNT(*) FROM outbox "
                "WHERE cursor_id IS NOT NULL GROUP BY cursor_id, step_index HAVING COUNT(*) > 1"
            )
            assert duplicates == []
            duplicates = _rows(
                "SELECT o.user_id, o.cursor_id, o.step_index, COUNT(*) FROM outbox o "
                "JOIN campaign_cursors c ON c.id = o.cursor_id AND c.user_id = o.user_id "
                "GROUP BY o.user_id, o.cursor_id, o.step_index HAVING COUNT(*) > 1"
            )
            assert duplicates == []
            # A static campaign's user has one cursor, so one email at most per step of the flow.
            duplicates = _rows(
                "SELECT user_id, step_index, COUNT(*) FROM outbox WHERE campaign_name = 'welcome' "
                "GROUP BY user_id, step_index HAVING COUNT(*) > 1"
            )
            assert duplicates == []

        @invariant()
        def every_campaign_email_is_a_recorded_send(self):
            sends = {
                (step.cursor_id, step.index): step
                for step in CursorStep.objects.filter(kind="send_email").select_related(
                    "cursor__campaign"
                )
            }
            rows = OutboxEmail.objects.exclude(campaign_name="")
            emailed = set()
            for row in rows:
                step = sends.get((row.cursor_id, row.step_index))
                assert step is not None, f"{row.key}: no recorded send step"
                assert step.cursor.user_id == row.user_id
                assert step.cursor.campaign.name == row.campaign_name
                assert step.args == {"template": row.template_name}
                assert step.result["outbox_id"] == row.pk
                assert row.key == f"campaign:{row.cursor_id}:{row.step_index}"
                emailed.add((row.cursor_id, row.step_index))
            assert set(sends) - emailed == set(), "recorded sends without their email"

        @invariant()
        def steps_are_recorded_in_order_and_waits_are_kept(self):
            steps: dict[int, list] = {}
            for step in CursorStep.objects.order_by("cursor_id", "index"):
                steps.setdefault(step.cursor_id, []).append(step)
            for cursor in Cursor.objects.all():
                mine = steps.get(cursor.pk, [])
                assert [step.index for step in mine] == list(range(cursor.step_count))
                for before, after in zip(mine, mine[1:], strict=False):
                    if before.kind == "wait":
                        waited = timedelta(seconds=before.args["seconds"])
                        assert after.created_at >= before.created_at + waited

        @invariant()
        def memberships_and_places_are_up_to_date(self):
            now_in = matching_segments_of(
                list(User.objects.values_list("pk", flat=True)),
                live_config.segments(config),
                clock.now,
            )
            expected = {(user, s) for user, ids in now_in.items() for s in ids}
            stored = set(SegmentMembership.objects.values_list("user_id", "segment_id"))
            assert stored == expected
            segments_of = {}
            for user, segment_id in stored:
                segments_of.setdefault(user, set()).add(segment_names[segment_id])
            for user in User.objects.values_list("pk", flat=True):
                mine = segments_of.get(user, set())
                for campaign in campaigns.values():
                    matches = set(campaign.segments) <= mine and not (
                        set(campaign.exclude_segments) & mine
                    )
                    cursors = Cursor.objects.filter(user_id=user, campaign=campaign)
                    if matches:
                        assert cursors.exists(), f"{user} matches {campaign.name}, no cursor"
                    if matches and campaign.behavior == Campaign.Behavior.DYNAMIC:
                        assert cursors.filter(entry_key=user).exists()
                    if not matches and campaign.behavior == Campaign.Behavior.DYNAMIC:
                        assert not cursors.filter(status=Cursor.Status.ACTIVE).exists()
                        assert not cursors.filter(entry_key__isnull=False).exists()

        def teardown(self):
            note(f"outbox: {list(OutboxEmail.objects.values_list('key', 'template_name'))}")

    run_state_machine_as_test(
        Campaigns,
        settings=settings(
            max_examples=15,
            stateful_step_count=10,
            deadline=None,
            # The fixtures run once: each example starts by deleting every user, and so every
            # row hanging off users, and by putting the clock back.
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
