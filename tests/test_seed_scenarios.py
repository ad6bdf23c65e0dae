"""The seed README's examples, end to end: through the HTTP API, the schedule and the outbox."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail

from campaigns.models import Cursor
from delivery.models import OutboxEmail

from .conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def put_user(api, user_id, **attributes):
    response = api.put(f"/api/users/{user_id}", {"attributes": attributes}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


def emit(api, user_id, name, **attributes):
    response = api.post(
        f"/api/users/{user_id}/events", {"name": name, "attributes": attributes}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_onboarding_without_profile_sends_the_reminder_and_highlights_on_day_seven(
    api, clock, pushed
):
    pushed()
    put_user(api, "jane", email="jane@example.com", name="Jane", lastLoginAt=iso(clock.now))
    assert sent("jane") == ["welcome"]
    assert mail.outbox[-1].subject == "Welcome Jane!"
    assert mail.outbox[-1].to == ["jane@example.com"]

    clock.advance_and_tick(hours=23)
    assert sent("jane") == ["welcome"]
    clock.advance_and_tick(hours=1)
    assert sent("jane") == ["welcome", "complete-profile-reminder"]

    clock.advance_and_tick(days=5, hours=23)
    assert sent("jane") == ["welcome", "complete-profile-reminder"]
    clock.advance_and_tick(hours=1)  # day 7: 1 + 3 + 3 days of waiting
    assert sent("jane") == ["welcome", "complete-profile-reminder", "feature-highlights"]
    # She left new-users on day 7, but onboarding is static: she stayed to the end.
    cursor = Cursor.objects.get(user_id="jane", campaign__name="onboarding")
    assert cursor.status == Cursor.Status.COMPLETED


def test_onboarding_with_completed_profile_skips_the_reminder(api, clock, pushed):
    pushed()
    put_user(api, "sam", email="sam@example.com", name="Sam", lastLoginAt=iso(clock.now))
    api.patch("/api/users/sam", {"attributes": {"profileCompleted": True}}, format="json")
    clock.advance_and_tick(days=1)
    assert sent("sam") == ["welcome"]
    clock.advance_and_tick(days=2, hours=23)
    assert sent("sam") == ["welcome"]
    clock.advance_and_tick(hours=1)  # day 4: 1 + 3 days of waiting
    assert sent("sam") == ["welcome", "feature-highlights"]


def test_a_purchase_sends_exactly_one_confirmation_with_the_event_in_it(api, clock, pushed):
    pushed()
    put_user(api, "user123", email="jane@example.com", name="Jane", lastLoginAt=iso(clock.now))
    mail.outbox.clear()
    event = emit(api, "user123", "purchase", orderId="ord_123", amount=99.99)

    confirmations = OutboxEmail.objects.filter(transaction_name="purchase-confirmation")
    assert confirmations.count() == 1
    row = confirmations.get()
    assert row.event_id == event["id"] and row.status == OutboxEmail.Status.SENT
    assert [m.subject for m in mail.outbox] == ["Order Confirmed, Jane!"]
    assert "ord_123" in mail.outbox[0].alternatives[0][0]

    # Processing the same event again (a retry, the sweep) sends nothing more.
    from segflow.models import Event
    from segflow.pipeline import process_events

    Event.objects.filter(pk=event["id"]).update(processed_at=None)
    process_events([event["id"]])
    assert confirmations.count() == 1 and len(mail.outbox) == 1


def test_a_password_reset_email_carries_the_reset_link(api, clock, pushed):
    pushed()
    put_user(api, "user123", email="jane@example.com", name="Jane", lastLoginAt=iso(clock.now))
    emit(api, "user123", "reset_password_requested", resetLink="https://example.com/reset/abc123")
    message = next(m for m in mail.outbox if m.subject == "Reset Your Password")
    html = message.alternatives[0][0]
    assert 'href="https://example.com/reset/abc123"' in html
    assert "https://example.com/reset/abc123" in message.body  # the text part keeps the link


def test_big_spenders_gains_a_user_whose_purchases_pass_1000(api, clock, pushed):
    pushed()
    put_user(api, "whale", email="whale@example.com", name="Wes", lastLoginAt=iso(clock.now))
    emit(api, "whale", "purchase", amount=600)
    assert "big-spenders" not in api.get("/api/users/whale").json()["segments"]
    emit(api, "whale", "purchase", amount=450.5)
    assert "big-spenders" in api.get("/api/users/whale").json()["segments"]
    # Other events' amounts do not count.
    emit(api, "minnow", "refund", amount=5000)
    assert "big-spenders" not in api.get("/api/users/minnow").json()["segments"]


def test_winback_backs_off_exponentially_and_stops_when_the_user_logs_in(api, clock, pushed):
    pushed()
    last_login = clock.now - timedelta(days=29)
    put_user(api, "idle", email="idle@example.com", name="Ida", lastLoginAt=iso(last_login))
    assert "winback" not in sent("idle")

    # Nobody does anything: the schedule notices the day she crosses 30 days of inactivity.
    clock.advance_and_tick(days=1, minutes=1)
    assert sent("idle", template_name="winback") == ["winback"]
    day0 = clock.now

    # The schedule every four hours rather than every hour: waits of days come due all the same,
    # and on MariaDB the hourly ticks of these seven weeks took most of a minute.
    every = timedelta(hours=4)
    sends = [0]
    for _ in range(15):
        clock.advance_and_tick(every, days=1)
        if len(sent("idle", template_name="winback")) > len(sends):
            sends.append((clock.now - day0) / timedelta(days=1))
    assert sends == [0, 1, 3, 7, 15]

    # She logs in: she is no longer inactive, and the campaign stops at once.
    put_user(api, "idle", email="idle@example.com", name="Ida", lastLoginAt=iso(clock.now))
    cursor = Cursor.objects.get(user_id="idle", campaign__name="winback-campaign")
    assert cursor.status == Cursor.Status.EXITED
    count = len(sent("idle"))
    clock.advance_and_tick(every, days=20)
    assert len(sent("idle")) == count

    # Thirty days of silence later she is inactive again, and winback starts over.
    clock.advance_and_tick(every, days=11)
    assert (
        Cursor.objects.filter(
            user_id="idle", campaign__name="winback-campaign", status=Cursor.Status.ACTIVE
        ).count()
        == 1
    )
    assert len(sent("idle")) == count + 1


def test_a_user_without_an_email_address_gets_no_email_and_the_outbox_says_why(api, clock, pushed):
    pushed()
    put_user(api, "anon", name="Anon", lastLoginAt=iso(clock.now))
    clock.advance_and_tick(hours=1)  # the welcome waits an hour for an address, then is skipped
    row = OutboxEmail.objects.get(user_id="anon", template_name="welcome")
    assert row.status == OutboxEmail.Status.SKIPPED
    assert "no email address" in row.reason
    assert mail.outbox == []


def test_a_login_event_takes_the_user_out_of_winback_at_once(api, clock, pushed):
    pushed()
    put_user(
        api,
        "user123",
        email="jane@example.com",
        name="Jane",
        lastLoginAt=iso(clock.now - timedelta(days=31)),
    )
    clock.advance_and_tick(minutes=2)
    assert sent("user123", template_name="winback") == ["winback"]

    emit(api, "user123", "login")  # the seed's client.emit('user123', 'login')
    cursor = Cursor.objects.get(user_id="user123", campaign__name="winback-campaign")
    assert cursor.status == Cursor.Status.EXITED
    clock.advance_and_tick(days=3)
    assert sent("user123", template_name="winback") == ["winback"]
