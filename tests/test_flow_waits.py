"""Waiting for an event, ctx.now and goals, driven through the HTTP API with the clock in hand.

`yield rt.wait_for_event("purchase", ...)` resumes as soon as a matching event of the user is
processed after the wait began (with the event), or at the timeout (with None), and a replay
gives the flow the same answer; `ctx.now` is the time of the step, the same on replay; a
campaign's `goal` event ends a user's cursor as converted, which the campaign's funnel counts.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
from django.urls import reverse

from campaigns import tallies as cursor_tallies
from campaigns.flow import FlowRun, RecordedStep
from campaigns.models import Campaign, Cursor, CursorStep
from campaigns.progress import progress
from delivery.models import OutboxEmail
from segflow import tallies
from segflow.pipeline import advance_cursors, tick

from .conftest import START, sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from datetime import timedelta

def cart(ctx, rt):
    purchase = yield rt.wait_for_event("purchase", timeout=timedelta(days=1))
    if purchase is None:
        yield rt.send_email("reminder")
    else:
        ctx.user.bought = purchase.attributes.sku
        ctx.user.bought_event = [purchase.name, purchase.timestamp.isoformat()]
        yield rt.send_email("thanks")
    yield rt.wait(days=2)
    # After a replay of the wait: the same answer as the first time, whatever happened since.
    yield rt.send_email("followup" if purchase else "last-call")

def big(ctx, rt):
    purchase = yield rt.wait_for_event("purchase", hours=6, where=lambda e: e.amount >= 100)
    yield rt.send_email("big" if purchase else "small")

def clocked(ctx, rt):
    started = ctx.now
    ctx.user.aware = started.tzinfo is not None
    yield rt.send_email("one")
    yield rt.wait(hours=1)
    ctx.user.second_step_at = ctx.now.isoformat()
    # Decided on the time of the first step: a replay hours later must take the same branch.
    yield rt.send_email("morning" if started.hour < 12 else "afternoon")
    yield rt.wait(hours=6)
    yield rt.send_email("done")

def drip(ctx, rt):
    yield rt.send_email("one")
    yield rt.wait(days=1)
    yield rt.send_email("two")

def attribute_is(name):
    return "SELECT u.id FROM users u WHERE JSON_EXTRACT(u.attributes, '$." + name + "') = 1"

html = lambda user: "<p>hi</p>"
names = ("reminder", "thanks", "followup", "last-call", "big", "small", "one", "morning",
         "afternoon", "done", "two")
config = {
    "templates": {name: {"subject": name, "html": html} for name in names},
    "segments": {name: {"sql": attribute_is(name)} for name in ("cart", "big", "clocked", "drip")},
    "campaigns": {
        "cart": {"segments": ["cart"], "behavior": "static", "flow": cart},
        "big-spender": {"segments": ["big"], "behavior": "static", "flow": big},
        "clocked": {"segments": ["clocked"], "behavior": "static", "flow": clocked},
        "goal-drip": {"segments": ["drip"], "behavior": "dynamic", "flow": drip,
                      "goal": "purchase"},
    },
}
"""


@pytest.fixture
def setup(write_config, pushed, clock, api):
    pushed(write_config(CONFIG))
    return clock


def put(api, user_id: str, **attributes) -> None:
    body = {"attributes": {"email": f"{user_id}@example.com", **attributes}}
    response = api.put(f"/api/users/{quote(user_id)}", body, format="json")
    assert response.status_code in (200, 201), response.content


def emit(api, user_id: str, name: str, **attributes) -> None:
    response = api.post(
        f"/api/users/{quote(user_id)}/events",
        {"name": name, "attributes": attributes},
        format="json",
    )
    assert response.status_code == 201, response.content


def user_attributes(api, user_id: str) -> dict:
    return api.get(f"/api/users/{quote(user_id)}").json()["attributes"]


def cursor(user_id: str, campaign: str) -> Cursor:
    return Cursor.objects.get(user_id=user_id, campaign__name=campaign)


def queued_at(user_id: str, template: str) -> datetime:
    return OutboxEmail.objects.get(user_id=user_id, template_name=template).created_at


# -- Waiting for an event --------------------------------------------------------------------


def test_an_event_resumes_the_wait_at_once_with_the_event(setup, api):
    put(api, "ann", cart=1)
    assert sent("ann") == []  # waiting, with the timeout a day away
    assert cursor("ann", "cart").due_at == START + timedelta(days=1)

    setup.advance(hours=2)
    emit(api, "ann", "purchase", sku="A-1")
    tick()
    assert sent("ann") == ["thanks"]
    assert queued_at("ann", "thanks") == START + timedelta(hours=2)  # not at the timeout
    attributes = user_attributes(api, "ann")
    assert attributes["bought"] == "A-1"
    assert attributes["bought_event"] == ["purchase", (START + timedelta(hours=2)).isoformat()]


def test_no_event_resumes_at_the_timeout_with_none(setup, api):
    put(api, "bob", cart=1)
    setup.advance_and_tick(hours=23, minutes=59)
    assert sent("bob") == []
    setup.advance_and_tick(minutes=1)
    assert sent("bob") == ["reminder"]
    assert queued_at("bob", "reminder") == START + timedelta(days=1)
    assert "bought" not in user_attributes(api, "bob")


def test_other_events_and_other_users_events_do_not_resume_the_wait(setup, api):
    put(api, "cat", cart=1)
    put(api, "dan", cart=1)
    setup.advance(hours=1)
    emit(api, "cat", "page_view")
    emit(api, "dan", "purchase", sku="D")
    tick()
    assert sent("cat") == []
    assert sent("dan") == ["thanks"]
    setup.advance_and_tick(days=1)
    assert sent("cat") == ["reminder"]


def test_where_filters_the_events_that_end_the_wait(setup, api):
    put(api, "eve", big=1)
    setup.advance(hours=1)
    emit(api, "eve", "purchase", amount=50)
    tick()
    assert sent("eve") == []
    assert cursor("eve", "big-spender").due_at == START + timedelta(hours=6)  # still waiting
    setup.advance(hours=1)
    emit(api, "eve", "purchase", amount=150)
    tick()
    assert sent("eve") == ["big"]
    record = CursorStep.objects.get(cursor=cursor("eve", "big-spender"), index=0)
    assert record.result["event"]["attributes"] == {"amount": 150}

    put(api, "fay", big=1)
    emit(api, "fay", "purchase", amount=99)
    setup.advance_and_tick(hours=6)
    assert sent("fay") == ["small"]


def test_an_event_from_before_the_wait_does_not_count(setup, api):
    emit(api, "gus", "purchase", sku="early")  # the user is created by the event
    setup.advance(minutes=5)
    put(api, "gus", cart=1)  # enters now: the wait begins after the purchase
    setup.advance_and_tick(hours=23)
    assert sent("gus") == []
    setup.advance_and_tick(hours=1)
    assert sent("gus") == ["reminder"]


def test_an_event_stored_before_the_wait_but_processed_after_it_counts(setup, api):
    from segflow.models import Event
    from segflow.pipeline import process_events

    # Stored while the workers were busy elsewhere (its task not run yet), then the user enters.
    put(api, "hal")
    late = Event.objects.create(user_id="hal", name="purchase", attributes={"sku": "late"})
    put(api, "hal", cart=1)
    assert CursorStep.objects.get(cursor=cursor("hal", "cart")).result["waiting"]["pending"] == [
        late.pk
    ]
    setup.advance(seconds=10)
    assert sent("hal") == []
    process_events([late.pk])  # processed now, after the wait began: it counts, at once
    assert sent("hal") == ["thanks"]
    assert user_attributes(api, "hal")["bought"] == "late"


def test_a_replay_gives_the_flow_the_same_event_or_none(setup, api):
    put(api, "ida", cart=1)
    put(api, "jon", cart=1)
    setup.advance(hours=3)
    emit(api, "ida", "purchase", sku="first")
    tick()
    setup.advance(hours=1)
    emit(api, "ida", "purchase", sku="second")  # after the wait ended: changes nothing
    setup.advance_and_tick(days=1)
    assert sent("jon") == ["reminder"]
    emit(api, "jon", "purchase", sku="too late")  # the wait is over: None stays None
    setup.advance_and_tick(days=2)
    assert sent("ida") == ["thanks", "followup"]
    assert sent("jon") == ["reminder", "last-call"]
    assert cursor("ida", "cart").status == Cursor.Status.COMPLETED
    assert cursor("jon", "cart").status == Cursor.Status.COMPLETED
    record = CursorStep.objects.get(cursor=cursor("ida", "cart"), index=0)
    assert record.result["event"]["attributes"] == {"sku": "first"}
    assert CursorStep.objects.get(cursor=cursor("jon", "cart"), index=0).result["event"] is None


def test_a_cursor_run_again_and_again_resumes_once(setup, api):
    put(api, "kim", cart=1)
    setup.advance(hours=1)
    emit(api, "kim", "purchase", sku="K")
    emit(api, "kim", "purchase", sku="K2")  # wakes it again
    kim = cursor("kim", "cart")
    for _ in range(3):  # retried tasks, and the tick
        advance_cursors([kim.pk])
        tick()
    assert sent("kim") == ["thanks"]
    assert list(CursorStep.objects.filter(cursor=kim).values_list("kind", flat=True)) == [
        "wait_for_event",
        "send_email",
        "wait",
    ]
    assert CursorStep.objects.get(cursor=kim, index=0).result["event"]["attributes"] == {"sku": "K"}


def test_the_timeout_is_given_like_a_waits_duration_and_must_be_more_than_zero():
    from campaigns.steps import Runtime

    rt = Runtime()
    assert rt.wait_for_event("purchase", timeout=timedelta(days=3)).seconds == 3 * 86400
    assert rt.wait_for_event("purchase", timedelta(hours=1), minutes=30).seconds == 5400
    assert rt.wait_for_event("purchase", days=1, hours=2).seconds == 26 * 3600
    for wrong in ({}, {"timeout": timedelta()}, {"hours": -1}):
        with pytest.raises(ValueError, match="needs a timeout of more than zero"):
            rt.wait_for_event("purchase", **wrong)
    with pytest.raises(ValueError, match="needs an event name"):
        rt.wait_for_event("", days=1)


# -- ctx.now ---------------------------------------------------------------------------------


def test_ctx_now_is_the_time_of_the_step_and_replays_the_same(setup, api):
    put(api, "lea", clocked=1)  # 09:00: the first step
    setup.advance_and_tick(hours=1, minutes=30)  # 10:00 (the tick on the hour): the second
    attributes = user_attributes(api, "lea")
    assert attributes["aware"] is True
    assert attributes["second_step_at"] == (START + timedelta(hours=1)).isoformat()
    # At 16:00 the flow is replayed from its first step: ctx.now there is still 09:00.
    setup.advance_and_tick(hours=6)
    assert sent("lea") == ["one", "morning", "done"]
    assert cursor("lea", "clocked").status == Cursor.Status.COMPLETED


def test_step_records_without_a_time_still_replay():
    def flow(ctx, rt):
        yield rt.send_email("one")
        yield rt.wait(hours=1)
        yield rt.send_email("two" if ctx.now else "never")

    history = [
        RecordedStep("send_email", {"template": "one"}, {"success": True}, {}),
        RecordedStep("wait", {"seconds": 3600.0}, None, {}),
    ]
    run = FlowRun(flow, user_id="u", attributes={}, history=history, now=START)
    assert run.next_step().step.template == "two"
    assert run.context.now == START


# -- Goals -----------------------------------------------------------------------------------


def counted_by_status(campaign: Campaign) -> dict[str, int]:
    return {k: v for k, v in progress(campaign).by_status.items() if v}


def assert_counts_are_true() -> None:
    counted = +tallies.read(*(tallies.Want(kind) for kind in cursor_tallies.KINDS))
    assert counted == +cursor_tallies.recount()


def test_the_goal_converts_the_user_and_the_funnel_counts_it(setup, api, admin_client):
    put(api, "max", drip=1)
    put(api, "ned", drip=1)
    assert sent("max") == ["one"]
    setup.advance(hours=2)
    emit(api, "max", "purchase", sku="M")
    emit(api, "ned", "page_view")
    converted = cursor("max", "goal-drip")
    assert converted.status == Cursor.Status.CONVERTED
    assert converted.ended_at == START + timedelta(hours=2)
    assert converted.end_reason == "reached the goal: purchase"
    setup.advance_and_tick(days=2)
    assert sent("max") == ["one"]  # converted: the rest of the flow never runs
    assert sent("ned") == ["one", "two"]

    campaign = Campaign.objects.get(name="goal-drip")
    assert counted_by_status(campaign) == {"converted": 1, "completed": 1}
    assert_counts_are_true()
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    html = page.content.decode()
    found = re.search(r'data-status="converted"><b><a href="([^"]+)">([\d,]+)</a>', html)
    assert found and found[2] == "1"
    assert "converted (reached the goal)" in html
    listed = admin_client.get(found[1].replace("&amp;", "&")).content.decode()
    assert "1 result" in listed

    # Still in the audience, so still holding their place: a converted user does not come back.
    emit(api, "max", "purchase", sku="again")
    put(api, "max", drip=1, name="Max")
    assert Cursor.objects.filter(user_id="max", campaign=campaign).count() == 1


def test_a_goal_reached_before_entering_does_not_convert(setup, api):
    emit(api, "oli", "purchase")
    put(api, "oli", drip=1)
    assert cursor("oli", "goal-drip").status == Cursor.Status.ACTIVE
    setup.advance_and_tick(days=1)
    assert cursor("oli", "goal-drip").status == Cursor.Status.COMPLETED
    assert Counter(sent("oli")) == Counter(["one", "two"])


def test_a_goal_is_part_of_the_campaign_and_a_changed_goal_is_pushed(write_config, pushed, clock):
    first = pushed(write_config(CONFIG))
    assert first is not None
    changed = write_config(CONFIG.replace('"goal": "purchase"', '"goal": "signup"'))
    assert changed.campaigns["goal-drip"].goal == "signup"
    assert changed.campaigns["cart"].goal is None
    plan = pushed(changed)
    assert "goal changed" in plan.render()


# -- Exactly once, whatever the order ----------------------------------------------------------

WATCH = """
def watch(ctx, rt):
    got = yield rt.wait_for_event("purchase", hours=3, where=lambda e: e.amount >= 50)
    yield rt.send_email("got" if got else "none")

html = lambda user: "<p>hi</p>"
config = {
    "templates": {name: {"subject": name, "html": html} for name in ("got", "none")},
    "segments": {"watched": {"sql": "SELECT u.id FROM users u "
                                    "WHERE JSON_EXTRACT(u.attributes, '$.watched') = 1"}},
    "campaigns": {"watch": {"segments": ["watched"], "behavior": "static", "flow": watch}},
}
"""

WATCHED = ("p", "q")


def test_any_order_of_events_clock_moves_and_cursor_runs_resumes_each_wait_once(
    write_config, pushed, clock, api
):
    from django.core import mail
    from django.db import transaction
    from hypothesis import HealthCheck, note, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        initialize,
        invariant,
        rule,
        run_state_machine_as_test,
    )

    from campaigns import waits
    from segflow.live_config import live_config
    from segflow.models import Event, User
    from segflow.pipeline import process_events

    pushed(write_config(WATCH))
    users = st.sampled_from(WATCHED)
    amounts = st.sampled_from([10, 60, 80])

    class Waits(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            User.objects.all().delete()
            mail.outbox.clear()
            clock.move_to(START)
            self.answers: dict[str, int | None] = {}

        @initialize(
            before=st.lists(st.tuples(users, amounts), max_size=2),
            late=st.lists(st.tuples(users, st.sampled_from([60, 80, 10])), max_size=2),
        )
        def users_enter(self, before, late):
            for user_id, amount in before:  # processed before the wait began: never the answer
                emit(api, user_id, "purchase", amount=amount, before=True)
            for user_id in WATCHED:
                put(api, user_id)
            for user_id, amount in late:  # stored before it, processed after it: may be
                Event.objects.create(
                    user_id=user_id, name="purchase", attributes={"amount": amount}
                )
            clock.advance(seconds=1)
            for user_id in WATCHED:
                put(api, user_id, watched=1)

        # -- operations --------------------------------------------------------------------

        @rule(user_id=users, name=st.sampled_from(["purchase", "purchase", "click"]), a=amounts)
        def an_event_arrives(self, user_id, name, a):
            emit(api, user_id, name, amount=a)

        @rule(user_id=users, a=amounts)
        def an_event_is_stored_but_its_task_is_late(self, user_id, a):
            Event.objects.create(user_id=user_id, name="purchase", attributes={"amount": a})

        @rule()
        def the_late_tasks_run(self):
            late = Event.objects.filter(processed_at__isnull=True).values_list("pk", flat=True)
            process_events(list(late))

        @rule(user_id=users)
        def a_processed_event_wakes_its_cursors_again(self, user_id):
            events = list(Event.objects.filter(user_id=user_id, processed_at__isnull=False))
            with transaction.atomic():
                waits.events_processed(live_config.sync(), events, clock.now)

        @rule(minutes=st.sampled_from([1, 20, 45, 90]))
        def time_passes(self, minutes):
            clock.advance(minutes=minutes)

        @rule()
        def the_schedule_ticks(self):
            waiting = [user_id for user_id in WATCHED if self.waiting(user_id)]
            tick()
            # A matching event processed before this tick resumes the wait in it, not later.
            for user_id in waiting:
                if self.expected(user_id) is not None:
                    assert sent(user_id) == ["got"]

        @rule(user_id=users)
        def a_worker_runs_the_cursor_again(self, user_id):
            advance_cursors([cursor(user_id, "watch").pk])

        # -- what must hold after every one of them ----------------------------------------

        def waiting(self, user_id: str) -> bool:
            record = CursorStep.objects.get(cursor=cursor(user_id, "watch"), index=0)
            return "waiting" in record.result

        def expected(self, user_id: str) -> Event | None:
            """The first event that ends the user's wait among those processed so far (the
            clock stands still between operations: the order of operations tells what was
            processed before what, not the times)."""
            began = CursorStep.objects.get(cursor=cursor(user_id, "watch"), index=0).created_at
            matching = [
                e
                for e in Event.objects.filter(user_id=user_id, name="purchase").order_by("pk")
                if not e.attributes.get("before")
                and e.attributes["amount"] >= 50
                and e.processed_at is not None
                and e.processed_at <= began + timedelta(hours=3)
            ]
            return matching[0] if matching else None

        @invariant()
        def each_wait_ends_once_with_the_first_matching_event_or_at_its_timeout(self):
            for user_id in WATCHED:
                mine = cursor(user_id, "watch")
                records = list(CursorStep.objects.filter(cursor=mine).order_by("index"))
                emails = sent(user_id)
                assert len(emails) <= 1
                began = records[0].created_at
                if "waiting" in records[0].result:
                    assert emails == [] and len(records) == 1
                    continue
                got = records[0].result["event"]
                answer = got["id"] if got else None
                if user_id not in self.answers:
                    # Just resumed, by the last operation: after everything it processed.
                    first = self.expected(user_id)
                    assert answer == (first.pk if first else None)
                    self.answers[user_id] = answer
                assert answer == self.answers[user_id]  # never resumed again
                assert emails == ["got" if got else "none"]
                if got is None:
                    resumed_at = datetime.fromisoformat(records[0].result["resumed_at"])
                    assert resumed_at >= began + timedelta(hours=3)  # not before the timeout
                assert mine.status == Cursor.Status.COMPLETED

        def teardown(self):
            note(f"outbox: {list(OutboxEmail.objects.values_list('user_id', 'template_name'))}")

    run_state_machine_as_test(
        Waits,
        settings=settings(
            max_examples=50,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


# -- The example's abandoned cart ------------------------------------------------------------


def test_the_examples_abandoned_cart_reminds_the_idle_and_converts_buyers(pushed, clock, api):
    pushed()  # examples/segflow_config.py
    for user_id in ("idle", "buyer"):
        put(api, user_id, name=user_id.title())
        emit(api, user_id, "checkout_started", cart=["sku-1"])
    assert cursor("idle", "abandoned-cart").status == Cursor.Status.ACTIVE
    clock.advance(hours=3)
    emit(api, "buyer", "purchase", amount=25)
    assert cursor("buyer", "abandoned-cart").status == Cursor.Status.CONVERTED
    clock.advance_and_tick(days=1)
    assert sent("idle", campaign_name="abandoned-cart") == ["cart-reminder"]
    assert sent("buyer", campaign_name="abandoned-cart") == []
    reminder = OutboxEmail.objects.get(user_id="idle", template_name="cart-reminder")
    assert reminder.subject == "You left something in your cart"
    assert "Hi Idle" in reminder.html
    clock.advance_and_tick(days=3)
    assert cursor("idle", "abandoned-cart").status == Cursor.Status.COMPLETED
    campaign = Campaign.objects.get(name="abandoned-cart")
    assert counted_by_status(campaign) == {"converted": 1, "completed": 1}
