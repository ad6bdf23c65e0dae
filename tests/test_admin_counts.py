"""The admin's counts (segflow/tallies.py) are kept as work happens, and always equal what the
tables say: after entries, steps, failures, exits, pushes, sends, retries, webhooks,
unsubscribes and deletions, a count from scratch finds the same numbers."""

from __future__ import annotations

from collections import Counter

import pytest
from anymail.signals import AnymailTrackingEvent, EventType

from campaigns import tallies as campaign_tallies
from campaigns.models import Campaign, Cursor
from delivery import tallies as email_tallies
from delivery.models import OutboxEmail
from delivery.sending import send_again
from delivery.tracking import handle_tracking_event
from delivery.unsubscribe import unsubscribe
from segflow import tallies, users
from segflow.models import Heartbeat, TallyDelta
from segflow.pipeline import tick
from segflow.upkeep import APPS, rebuild_tallies
from segments import tallies as segment_tallies
from segments.models import MembershipHistory, Segment, SegmentMembership, SegmentSnapshot

from .email_support import EMAILS, POSTMARK, put_user
from .email_support import postmark as postmark  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from datetime import timedelta
from segflow.config import SegflowConfig

def drip(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    if ctx.user.explode:
        raise RuntimeError("flow bug for a user who explodes")
    yield rt.send_email("tips")
    yield rt.wait(days=3)
    yield rt.send_email("tips")

def nudge(ctx, rt):
    yield rt.wait(hours=2)
    yield rt.send_email("tips")
    yield rt.wait(days=1)

config: SegflowConfig = {
    "email_provider": {"config": PROVIDER, "from_address": "Acme <hello@acme.test>"},
    "templates": {
        "welcome": {"subject": lambda user: f"Welcome {user.name}!", "html": "emails/welcome.html"},
        "tips": {"subject": "Tips", "html": "emails/tips.html"},
    },
    "segments": {
        "everyone": {"sql": "SELECT u.id FROM users u"},
        "pro": {"sql": "SELECT u.id FROM users u "
                       "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'"},
        "quiet": {"sql": "SELECT u.id FROM users u WHERE u.created_at < %(cutoff)s",
                  "params": lambda now: {"cutoff": now - timedelta(days=2)},
                  "refresh_every": timedelta(hours=1)},
    },
    "campaigns": {
        "drip": {"segments": ["everyone"], "behavior": "static", "flow": drip},
        "pro-nudge": {"segments": ["pro"], "behavior": "dynamic", "flow": nudge},
        "quiet-nudge": {"segments": ["quiet"], "behavior": "dynamic", "flow": nudge},
    },
    "transactions": {
        "receipt": {"event": "purchase", "subject": "Your receipt", "html": "emails/receipt.html"},
    },
}
""".replace("PROVIDER", POSTMARK)


def all_counts() -> Counter:
    kinds = [kind for app in APPS for kind in app.KINDS]
    return +tallies.read(*(tallies.Want(kind) for kind in kinds))


def assert_counts_are_true():
    counted = all_counts()
    recounted = Counter()
    for app in APPS:
        recounted.update(app.recount())
    recounted = +recounted
    assert counted == recounted, {
        k: (counted.get(k, 0), recounted.get(k, 0))
        for k in set(counted) | set(recounted)
        if counted.get(k, 0) != recounted.get(k, 0)
    }


@pytest.fixture
def world(api, clock, write_config, pushed, postmark):  # noqa: F811
    pushed(write_config(CONFIG, EMAILS))
    return postmark


def test_counts_follow_campaigns_step_by_step(api, clock, world):
    for n in range(6):
        put_user(api, f"u{n}", email=f"u{n}@example.com", name=f"U{n}", explode=n == 2)
    put_user(api, "pro1", email="pro1@example.com", name="Pro", plan="pro")
    put_user(api, "nomail", name="No address")
    assert_counts_are_true()
    drip = Campaign.objects.get(name="drip")
    counts = tallies.read(tallies.Want("cursors", str(drip.pk)))
    assert sum(counts.values()) == Cursor.objects.filter(campaign=drip).count() == 8

    clock.advance_and_tick(hours=3)  # pro-nudge sends its tips
    assert_counts_are_true()
    put_user(api, "pro1", email="pro1@example.com", name="Pro", plan="free")  # leaves pro
    assert Cursor.objects.get(user_id="pro1", campaign__name="pro-nudge").status == "exited"
    assert_counts_are_true()

    clock.advance_and_tick(days=1, hours=1)  # u2's flow raises; the others get tips
    assert Cursor.objects.get(user_id="u2", campaign=drip).status == "failed"
    assert_counts_are_true()
    errors = tallies.read(tallies.Want("cursor_errors", str(drip.pk)))
    assert list(errors.values()) == [1]
    assert next(iter(errors)).b.startswith("the flow raised RuntimeError('flow bug")

    clock.advance_and_tick(days=2)  # "quiet" refreshes: everyone enters quiet-nudge
    assert Cursor.objects.filter(campaign__name="quiet-nudge").count() == 8
    assert_counts_are_true()
    clock.advance_and_tick(days=4)  # drip completes
    assert Cursor.objects.filter(campaign=drip, status="completed").count() == 7
    assert_counts_are_true()

    users.delete_user("u3")
    assert_counts_are_true()


def test_counts_follow_a_push_that_changes_and_removes_campaigns(
    api, clock, world, write_config, pushed
):
    for n in range(3):
        put_user(api, f"u{n}", email=f"u{n}@example.com", name=f"U{n}", plan="pro")
    clock.advance_and_tick(hours=3)
    welcome = 'yield rt.send_email("welcome")\n'
    changed = CONFIG.replace(welcome, welcome + '    yield rt.send_email("tips")\n', 1)
    changed = changed.replace(
        '"pro-nudge": {"segments": ["pro"], "behavior": "dynamic", "flow": nudge},', ""
    )
    pushed(write_config(changed, EMAILS))
    assert Cursor.objects.filter(campaign__name="drip", status="diverged").count() == 3
    assert Cursor.objects.filter(campaign__name="pro-nudge", status="ended").count() == 3
    assert_counts_are_true()


def test_counts_follow_emails_through_retries_failures_webhooks_and_unsubscribes(
    api, clock, world, settings
):
    postmark = world
    postmark.answer(500, {"ErrorCode": 100, "Message": "Internal server error"})
    postmark.answer(422, {"ErrorCode": 300, "Message": "Invalid 'From' address: 'nope'."})
    put_user(api, "jane", email="jane@example.com", name="Jane")  # welcome: retry later
    put_user(api, "bob", email="bob@example.com", name="Bob")  # welcome: fails for good
    put_user(api, "ann", email="ann@example.com", name="Ann")  # welcome: sent
    assert OutboxEmail.objects.get(user_id="jane").status == "queued"
    assert OutboxEmail.objects.get(user_id="bob").status == "failed"
    assert_counts_are_true()
    failures = tallies.read(tallies.Want("email_failures", "drip"))
    assert sum(failures.values()) == 1

    clock.advance_and_tick(minutes=5)  # jane's retry goes out
    assert OutboxEmail.objects.get(user_id="jane").status == "sent"
    assert_counts_are_true()

    bob = OutboxEmail.objects.get(user_id="bob")
    assert send_again([bob.pk]) == 1
    assert OutboxEmail.objects.get(pk=bob.pk).status == "sent"
    assert_counts_are_true()

    # A sender that died mid-send leaves `sending`; the sweep marks it unknown; a webhook
    # reconciles it as sent.
    ann = OutboxEmail.objects.get(user_id="ann")
    OutboxEmail.objects.filter(pk=ann.pk).update(status="sending", sent_at=None)
    tallies.add(  # (what the update above would have counted, had a sender made it)
        tallies.difference(
            email_tallies.counted_as(email_tallies.state_of(ann)),
            email_tallies.counted_as(email_tallies.state_of(ann, status="sending", sent_at=None)),
        )
    )
    assert_counts_are_true()
    clock.advance(seconds=settings.SEGFLOW_EMAIL_SENDING_STALE_SECONDS + 1)
    tick()
    assert OutboxEmail.objects.get(pk=ann.pk).status == "unknown"
    assert_counts_are_true()

    for kind, row in (
        (EventType.DELIVERED, ann),
        (EventType.OPENED, ann),
        (EventType.CLICKED, ann),
        (EventType.OPENED, ann),
        (EventType.BOUNCED, bob),
    ):
        row.refresh_from_db()
        event = AnymailTrackingEvent(
            event_type=kind,
            message_id=row.message_id or None,
            recipient=row.to_address,
            metadata={"segflow_outbox_id": str(row.pk)},
            esp_event={"Type": "HardBounce"},
        )
        handle_tracking_event(event, "Postmark")
    assert OutboxEmail.objects.get(pk=ann.pk).status == "sent"
    assert_counts_are_true()
    reported = tallies.read(tallies.Want("emails", "drip"))
    assert reported[tallies.key("emails", "drip", "welcome", "opened")] == 1
    assert reported[tallies.key("emails", "drip", "welcome", "bounced")] == 1

    unsubscribe("jane", "link", OutboxEmail.objects.get(user_id="jane").key)
    assert (
        tallies.read(tallies.Want("emails", "drip"))[
            tallies.key("emails", "drip", "welcome", "unsubscribed")
        ]
        == 1
    )
    assert_counts_are_true()

    users.delete_user("jane")
    users.delete_user("bob")
    assert_counts_are_true()


def test_memberships_are_counted_and_kept_in_history(api, clock, world):
    put_user(api, "jane", email="jane@example.com", name="Jane", plan="pro")
    put_user(api, "bob", email="bob@example.com", name="Bob")
    pro = Segment.objects.get(name="pro")
    assert segment_tallies.members([pro.pk]) == {pro.pk: 1}
    put_user(api, "jane", email="jane@example.com", name="Jane", plan="free")
    put_user(api, "bob", email="bob@example.com", name="Bob", plan="pro")
    assert segment_tallies.members([pro.pk]) == {pro.pk: 1}
    history = list(
        MembershipHistory.objects.filter(segment_id=pro.pk)
        .order_by("id")
        .values_list("user_id", "entered")
    )
    assert history == [("jane", True), ("jane", False), ("bob", True)]

    clock.advance_and_tick(days=2, hours=1)  # "quiet" is refreshed for everyone
    quiet = Segment.objects.get(name="quiet")
    assert SegmentMembership.objects.filter(segment=quiet).count() == 2
    entered = MembershipHistory.objects.filter(segment_id=quiet.pk, entered=True)
    assert sorted(entered.values_list("user_id", flat=True)) == ["bob", "jane"]
    snapshot = SegmentSnapshot.objects.filter(segment=quiet, occasion="evaluation").latest("at")
    assert (snapshot.members, snapshot.entered) == (2, 2)
    assert snapshot.seconds is not None
    assert SegmentSnapshot.objects.filter(occasion="hourly").exists()
    assert_counts_are_true()


def test_folding_keeps_the_counts_and_a_rebuild_finds_them_again(api, clock, world):
    for n in range(4):
        put_user(api, f"u{n}", email=f"u{n}@example.com", name=f"U{n}", plan="pro")
    before = all_counts()
    assert TallyDelta.objects.exists()
    while tallies.fold():
        pass
    assert not TallyDelta.objects.exists()
    assert all_counts() == before
    rebuild_tallies()
    assert all_counts() == before
    assert_counts_are_true()


def test_the_tick_is_recorded(api, clock, world):
    tick()
    assert Heartbeat.objects.get(name="tick").at == clock.now
    clock.advance(minutes=1)
    tick()
    assert Heartbeat.objects.get(name="tick").at == clock.now
    assert tallies.last_beat("tick") == clock.now


def test_every_app_says_what_its_counts_are(db):
    assert campaign_tallies.KINDS and email_tallies.KINDS and segment_tallies.KINDS
