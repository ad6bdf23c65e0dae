"""The frequency cap: at most N campaign emails to a user within any span of the cap's length,
across campaigns. A capped email is skipped with the reason (the flow sees success=False and
may branch), counted among the skipped on the campaign page; transactional email is neither
capped nor counted. Through the API and the schedule, with the test's clock; and a property
for any sequence of sends, events, user changes and clock moves."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from campaigns.models import Campaign, Cursor
from delivery.models import OutboxEmail
from delivery.policy import CAPPED_STATUSES
from segflow.models import User
from segflow.pipeline import advance_cursors

from .conftest import START, sent
from .email_support import emit, put_user
from .test_admin_counts import assert_counts_are_true

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from datetime import timedelta

def drip(ctx, rt):
    yield rt.send_email("one")
    yield rt.wait(days=1)
    yield rt.send_email("two")
    yield rt.wait(days=1)
    yield rt.send_email("three")

def promo(ctx, rt):
    yield rt.wait(days=2, hours=1)
    result = yield rt.send_email("promo")
    ctx.user.promo_status = result.status
    if not result.success:
        # Capped: this flow tries once more when the oldest of the three is a week old.
        yield rt.wait(days=5)
        again = yield rt.send_email("promo")
        ctx.user.promo_again = again.success

html = lambda user: "<p>hi</p>"
NAMES = ("one", "two", "three", "promo")
config = {
    "frequency_cap": {"emails": 3, "within": timedelta(days=7)},
    "templates": {name: {"subject": name, "html": html} for name in NAMES},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {
        "drip": {"segments": ["all"], "behavior": "static", "flow": drip},
        "promo": {"segments": ["all"], "behavior": "static", "flow": promo},
    },
    "transactions": {"receipt": {"event": "purchase", "subject": "Receipt", "html": html}},
}
"""


def attributes(api, user_id: str) -> dict:
    return api.get(f"/api/users/{user_id}").json()["attributes"]


def test_the_fourth_campaign_email_in_a_week_is_skipped_and_the_flow_sees_it(
    admin_client, api, clock, write_config, pushed
):
    pushed(write_config(CONFIG))
    put_user(api, "ann", email="ann@example.com")
    clock.advance_and_tick(days=2, hours=1)  # one, two, three; then promo, the fourth
    assert sent("ann", status="sent") == ["one", "two", "three"]
    promo = OutboxEmail.objects.get(user_id="ann", campaign_name="promo")
    assert promo.status == OutboxEmail.Status.SKIPPED
    assert promo.reason == (
        "frequency cap: the user already had 3 campaign emails in the last 7 days "
        "(the config's frequency_cap)"
    )
    assert attributes(api, "ann")["promo_status"] == "skipped"

    # Transactional email is not capped, and does not count.
    emit(api, "ann", "purchase")
    assert sent("ann", transaction_name="receipt", status="sent") == ["receipt"]

    # A week after `one`, two campaign emails are within the last seven days: promo goes.
    clock.advance_and_tick(days=5)
    assert sent("ann", campaign_name="promo") == ["promo", "promo"]
    assert sent("ann", campaign_name="promo", status="sent") == ["promo"]
    assert attributes(api, "ann")["promo_again"] is True
    assert Cursor.objects.get(user_id="ann", campaign__name="promo").status == "completed"

    # The campaign page counts it among the skipped, with its reason.
    page = admin_client.get(
        reverse("admin:campaigns_campaign_change", args=[Campaign.objects.get(name="promo").pk])
    ).content.decode()
    assert re.search(r"skipped: <a [^>]+>1</a> — frequency cap: the user already had 3", page)
    assert_counts_are_true()


def test_without_a_cap_every_campaign_email_goes(api, clock, write_config, pushed):
    cap = '    "frequency_cap": {"emails": 3, "within": timedelta(days=7)},\n'
    assert cap in CONFIG
    pushed(write_config(CONFIG.replace(cap, "")))
    put_user(api, "bob", email="bob@example.com")
    clock.advance_and_tick(days=2, hours=1)
    assert sent("bob", status="sent") == ["one", "two", "three", "promo"]


# ---------------------------------------------------------------------------------------------
# For any sequence: never more than N campaign emails within any span of the cap's length.

PROPERTY_CONFIG = """
from datetime import timedelta

def often(ctx, rt):
    while True:
        yield rt.send_email("often")
        yield rt.wait(hours=3)

def sometimes(ctx, rt):
    while True:
        result = yield rt.send_email("sometimes")
        yield rt.wait(hours=5 if result.success else 1)

def once(ctx, rt):
    yield rt.send_email("once")

def wants(name):
    return ("SELECT u.id FROM users u "
            "WHERE JSON_EXTRACT(u.attributes, '$." + name + "') = 1")

html = lambda user: "<p>hi</p>"
config = {
    "frequency_cap": {"emails": CAP, "within": timedelta(hours=WITHIN)},
    "templates": {name: {"subject": name, "html": html} for name in ("often", "sometimes", "once")},
    "segments": {name: {"sql": wants(name)} for name in ("often", "sometimes", "once")},
    "campaigns": {
        "often": {"segments": ["often"], "behavior": "dynamic", "flow": often},
        "sometimes": {"segments": ["sometimes"], "behavior": "dynamic", "flow": sometimes},
        "once": {"segments": ["once"], "behavior": "dynamic", "flow": once},
    },
    "transactions": {"receipt": {"event": "purchase", "subject": "Receipt", "html": html}},
}
"""
CAP, WITHIN = 2, timedelta(hours=10)
USERS = ("ann", "bob")


def test_never_more_than_the_cap_within_any_span_of_its_length(api, clock, write_config, pushed):
    source = PROPERTY_CONFIG.replace("CAP", str(CAP)).replace("WITHIN", str(WITHIN.seconds // 3600))
    pushed(write_config(source))

    class Sends(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            User.objects.all().delete()  # cursors, steps and the outbox with them
            clock.move_to(START)

        @initialize(wants=st.lists(st.sampled_from(["often", "sometimes", "once"]), max_size=3))
        def users_arrive(self, wants):
            for user_id in USERS:
                self.put(user_id, wants)

        @rule(
            user_id=st.sampled_from(USERS),
            wants=st.lists(st.sampled_from(["often", "sometimes", "once"]), max_size=3),
        )
        def put(self, user_id, wants):
            put_user(api, user_id, email=f"{user_id}@example.com", **dict.fromkeys(wants, 1))

        @rule(user_id=st.sampled_from(USERS))
        def purchase(self, user_id):
            emit(api, user_id, "purchase")

        @rule(minutes=st.sampled_from([1, 30, 60, 170, 7 * 60, 11 * 60]))
        def time_passes(self, minutes):
            clock.advance_and_tick(minutes=minutes)

        @rule(data=st.data())
        def a_worker_runs_a_cursor_again(self, data):
            ids = list(Cursor.objects.order_by("pk").values_list("pk", flat=True))
            if ids:
                advance_cursors([data.draw(st.sampled_from(ids), label="cursor")])

        @invariant()
        def at_most_the_cap_within_any_span(self):
            for user_id in USERS:
                times = sorted(
                    OutboxEmail.objects.filter(user_id=user_id, status__in=CAPPED_STATUSES)
                    .exclude(campaign_name="")
                    .values_list("created_at", flat=True)
                )
                for first, last in zip(times, times[CAP:], strict=False):
                    assert last - first >= WITHIN, (user_id, times)

        @invariant()
        def skipped_only_when_the_cap_was_reached(self):
            capped = OutboxEmail.objects.filter(reason__startswith="frequency cap:")
            for row in capped:
                counted = (
                    OutboxEmail.objects.filter(
                        user_id=row.user_id,
                        status__in=CAPPED_STATUSES,
                        created_at__gt=row.created_at - WITHIN,
                        created_at__lte=row.created_at,
                    )
                    .exclude(campaign_name="")
                    .count()
                )
                assert counted == CAP, (row.key, counted)
            assert not capped.filter(campaign_name="").exists()
            assert (
                not OutboxEmail.objects.filter(transaction_name="receipt")
                .exclude(status="sent")
                .exists()
            )

        def teardown(self):
            note(
                str(
                    list(
                        OutboxEmail.objects.order_by("id").values_list(
                            "user_id", "template_name", "status", "created_at"
                        )
                    )
                )
            )

    run_state_machine_as_test(
        Sends,
        settings=settings(
            max_examples=12,
            stateful_step_count=12,
            deadline=None,
            # The fixtures run once: each example deletes every user and puts the clock back.
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
