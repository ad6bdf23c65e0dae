"""Campaigns: entering, static and dynamic behaviour, one place per user, failures, ctx.user."""

import pytest
from django.db import IntegrityError, transaction

from campaigns.models import Campaign, Cursor
from delivery.models import OutboxEmail
from segflow import users as user_service
from segflow.models import User

from .conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from segflow.config import SegflowConfig

def drip(ctx, rt):
    yield rt.send_email("one")
    yield rt.wait(days=1)
    yield rt.send_email("two")
    yield rt.wait(days=1)
    yield rt.send_email("three")

def fragile(ctx, rt):
    yield rt.send_email("one")
    yield rt.wait(hours=1)
    if ctx.user.explode:
        raise RuntimeError("flow bug for " + ctx.user.id)
    yield rt.send_email("two")

def tagger(ctx, rt):
    result = yield rt.send_email("one")
    ctx.user.stage = "contacted" if result.success else "unreachable"
    yield rt.wait(hours=1)

def plan_is(name):
    return ("SELECT u.id FROM users u "
            "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = '" + name + "'")

html = lambda user: "<p>hi</p>"
config: SegflowConfig = {
    "templates": {t: {"subject": t, "html": html} for t in ("one", "two", "three")},
    "segments": {
        "pro": {"sql": plan_is("pro")},
        "in-eu": {"sql": "SELECT u.id FROM users u WHERE JSON_EXTRACT(u.attributes, '$.eu') = 1"},
        "unsubscribed": {"evaluator": lambda users: users.filter(attributes__unsubscribed=True)},
        "contacted": {"evaluator": lambda users: users.filter(attributes__stage="contacted")},
    },
    "campaigns": {
        "static-drip": {"segments": ["pro"], "behavior": "static", "flow": drip},
        "dynamic-drip": {"segments": ["pro", "in-eu"], "exclude_segments": ["unsubscribed"],
                         "behavior": "dynamic", "flow": drip},
        "fragile": {"segments": ["in-eu"], "behavior": "static", "flow": fragile},
        "tagger": {"segments": ["in-eu"], "behavior": "static", "flow": tagger},
    },
}
"""


@pytest.fixture
def setup(write_config, pushed, clock):
    pushed(write_config(CONFIG))
    return clock


def put(user_id, **attributes):
    user_service.put_user(user_id, {"email": f"{user_id}@example.com", **attributes})


def cursor(user_id, campaign):
    return Cursor.objects.get(user_id=user_id, campaign__name=campaign)


def test_static_keeps_a_user_to_the_end_after_they_stop_matching(setup):
    put("s", plan="pro")
    assert sent("s", campaign_name="static-drip") == ["one"]
    put("s", plan="free")
    setup.advance_and_tick(days=2)
    assert sent("s", campaign_name="static-drip") == ["one", "two", "three"]
    assert cursor("s", "static-drip").status == Cursor.Status.COMPLETED
    # Matching again later does not start a static campaign over.
    put("s", plan="pro")
    setup.advance_and_tick(days=2)
    assert sent("s", campaign_name="static-drip") == ["one", "two", "three"]


def test_dynamic_needs_all_segments_and_none_of_the_excluded(setup):
    put("only-pro", plan="pro")
    put("both", plan="pro", eu=1)
    put("both-unsubscribed", plan="pro", eu=1, unsubscribed=True)
    entered = set(
        Cursor.objects.filter(campaign__name="dynamic-drip").values_list("user_id", flat=True)
    )
    assert entered == {"both"}


def test_dynamic_exits_at_once_and_comes_back_when_matching_again(setup):
    put("d", plan="pro", eu=1)
    assert sent("d", campaign_name="dynamic-drip") == ["one"]
    put("d", plan="pro", eu=1, unsubscribed=True)  # now in an excluded segment
    assert cursor("d", "dynamic-drip").status == Cursor.Status.EXITED
    setup.advance_and_tick(days=2)
    assert sent("d", campaign_name="dynamic-drip") == ["one"]

    put("d", plan="pro", eu=1)  # matches again: a new cursor starts from the top
    cursors = Cursor.objects.filter(user_id="d", campaign__name="dynamic-drip").order_by("id")
    assert [c.status for c in cursors] == [Cursor.Status.EXITED, Cursor.Status.ACTIVE]
    assert sent("d", campaign_name="dynamic-drip") == ["one", "one"]


def test_the_database_holds_at_most_one_place_per_user_and_campaign(setup):
    put("u", plan="pro")
    campaign = Campaign.objects.get(name="static-drip")
    with pytest.raises(IntegrityError), transaction.atomic():
        Cursor.objects.create(campaign=campaign, user_id="u", entry_key="u")
    # Ended cursors let go of the key, so history can hold many of them.
    Cursor.objects.create(
        campaign=campaign, user_id="u", entry_key=None, status=Cursor.Status.EXITED
    )
    Cursor.objects.create(
        campaign=campaign, user_id="u", entry_key=None, status=Cursor.Status.EXITED
    )


def test_entering_twice_at_once_gives_one_cursor(setup):
    from django.utils import timezone

    from campaigns.audience import reconcile_campaign

    put("twice", plan="pro")
    campaign = Campaign.objects.get(name="static-drip")
    reconcile_campaign(campaign, timezone.now(), user_id="twice")
    reconcile_campaign(campaign, timezone.now())
    assert Cursor.objects.filter(user_id="twice", campaign=campaign).count() == 1


def test_a_flow_that_raises_fails_its_cursor_and_the_others_go_on(setup):
    put("bad", eu=1, explode=True)
    put("good", eu=1)
    setup.advance_and_tick(hours=2)
    failed = cursor("bad", "fragile")
    assert failed.status == Cursor.Status.FAILED
    assert "RuntimeError" in failed.end_reason and "flow bug for bad" in failed.error
    assert sent("good", campaign_name="fragile") == ["one", "two"]
    assert cursor("good", "fragile").status == Cursor.Status.COMPLETED


def test_a_flow_can_branch_on_send_email_and_assigning_ctx_user_updates_the_user(setup):
    put("t", eu=1)
    user = User.objects.get(pk="t")
    assert user.attributes["stage"] == "contacted"
    # The assignment re-evaluated the user's segments.
    from segments.models import SegmentMembership

    assert SegmentMembership.objects.filter(user_id="t", segment__name="contacted").exists()

    user_service.put_user("no-mail", {"eu": 1})  # no email address: send_email fails
    setup.advance_and_tick(hours=1)  # once it has waited an hour for one
    assert User.objects.get(pk="no-mail").attributes["stage"] == "unreachable"
    row = OutboxEmail.objects.get(user_id="no-mail", campaign_name="tagger")
    assert row.status == OutboxEmail.Status.SKIPPED


def test_a_step_runs_once_even_when_advanced_twice(setup):
    from campaigns.runner import advance_cursor
    from segflow.live_config import live_config

    put("once", plan="pro")
    c = cursor("once", "static-drip")
    setup.advance(days=1)
    assert advance_cursor(c.pk, live_config.current()) == "waiting"
    assert advance_cursor(c.pk, live_config.current()) == "not due"
    assert sent("once", campaign_name="static-drip") == ["one", "two"]


def test_a_flow_sending_forever_without_waiting_is_stopped(write_config, pushed, clock):
    pushed(
        write_config("""
def spam(ctx, rt):
    while True:
        yield rt.send_email("one")

config = {
    "templates": {"one": {"subject": "1", "html": lambda user: "x"}},
    "segments": {"all": {"sql": "SELECT id FROM users"}},
    "campaigns": {"spam": {"segments": ["all"], "behavior": "static", "flow": spam}},
}
""")
    )
    put("victim")
    c = cursor("victim", "spam")
    assert c.status == Cursor.Status.FAILED and "without a wait" in c.end_reason
    assert not OutboxEmail.objects.exists()


def test_a_cursor_that_diverges_when_it_wakes_is_ended_and_sends_nothing(write_config, setup):
    from campaigns.runner import advance_cursor
    from segflow.live_config import live_config

    put("w", plan="pro")
    c = cursor("w", "static-drip")
    # The process runs a flow whose first email differs from what "w" was sent (its replay
    # depended on something outside the recorded history, say).
    changed = write_config(
        CONFIG.replace('yield rt.send_email("one")', 'yield rt.send_email("three")', 1)
    )
    live_config.set(changed)
    Campaign.objects.filter(name="static-drip").update(
        flow_fingerprint=changed.campaigns["static-drip"].flow_fingerprint
    )
    setup.advance(days=1)
    assert advance_cursor(c.pk, changed) == Cursor.Status.DIVERGED
    c.refresh_from_db()
    assert c.status == Cursor.Status.DIVERGED and "send_email('three')" in c.end_reason
    assert c.due_at is None
    assert sent("w", campaign_name="static-drip") == ["one"]
