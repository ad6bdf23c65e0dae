"""A campaign email for a user with no address yet waits a while for one, then is skipped.

The rule: when a campaign's `send_email` step comes due for a user with no email address, the
step waits for one, trying again every SEGFLOW_WAIT_FOR_ADDRESS_RETRY_SECONDS and at once when
the user changes, for at most SEGFLOW_WAIT_FOR_ADDRESS_SECONDS from when it came due. An address
in that time and the email goes out; none, and the step is skipped (the outbox row says why) and
the flow goes on. Through the API and the schedule, with the test's clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail

from campaigns.models import Cursor, CursorStep
from delivery.models import OutboxEmail

from .conftest import START, sent

pytestmark = pytest.mark.django_db(transaction=True)


def put(api, user_id: str, **attributes) -> dict:
    response = api.put(f"/api/users/{user_id}", {"attributes": attributes}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


def emit(api, user_id: str, name: str) -> None:
    response = api.post(f"/api/users/{user_id}/events", {"name": name}, format="json")
    assert response.status_code == 201, response.content


def onboarding(api, user_id: str) -> dict:
    [entry] = api.get(f"/api/users/{user_id}").json()["campaigns"]
    return entry


def steps(user_id: str) -> list[tuple[int, str, dict]]:
    return list(
        CursorStep.objects.filter(cursor__user_id=user_id)
        .order_by("index")
        .values_list("index", "kind", "args")
    )


def test_an_event_before_the_put_still_gets_the_welcome_email(api, clock, pushed):
    pushed()  # the example config: new users enter onboarding, whose first step is `welcome`
    emit(api, "jane", "page_view")  # the event creates jane, with no attributes yet
    entry = onboarding(api, "jane")
    assert entry["status"] == "active" and entry["steps_done"] == 0
    assert sent("jane") == [], "waiting for an address, not skipped"

    clock.advance(minutes=2)
    put(api, "jane", email="jane@example.com", name="Jane", lastLoginAt=clock.now.isoformat())
    clock.advance_and_tick(seconds=1)
    assert sent("jane", status=OutboxEmail.Status.SENT) == ["welcome"]
    assert [m.subject for m in mail.outbox] == ["Welcome Jane!"]
    assert [m.to for m in mail.outbox] == [["jane@example.com"]]

    # The step was recorded once, when performed, and the flow goes on from there on replay.
    assert [(i, kind) for i, kind, _ in steps("jane")] == [(0, "send_email"), (1, "wait")]
    clock.advance_and_tick(days=1)
    assert sent("jane") == ["welcome", "complete-profile-reminder"]
    assert onboarding(api, "jane")["steps_done"] == 4


def test_an_address_that_comes_while_waiting_is_picked_up_by_the_schedule(api, clock, pushed):
    """Even if nothing wakes the cursor, the schedule tries again every retry interval."""
    pushed()
    emit(api, "sam", "page_view")
    clock.advance(minutes=1, seconds=30)
    # The address arrives by a path that does not evaluate the user: only the schedule can see it.
    from segflow.models import User

    User.objects.filter(pk="sam").update(attributes={"email": "sam@example.com", "name": "Sam"})
    clock.advance_and_tick(minutes=2, every=timedelta(seconds=30))
    assert sent("sam", status=OutboxEmail.Status.SENT) == ["welcome"]


def test_with_no_address_ever_the_step_is_skipped_after_the_bound_and_the_flow_goes_on(
    api, clock, pushed, settings
):
    pushed()
    emit(api, "anon", "page_view")
    bound = timedelta(seconds=settings.SEGFLOW_WAIT_FOR_ADDRESS_SECONDS)
    assert bound == timedelta(hours=1)  # the default

    clock.advance_and_tick(minutes=59, every=timedelta(minutes=10))
    assert sent("anon") == []
    entry = onboarding(api, "anon")
    assert entry["steps_done"] == 0 and entry["status"] == "active"

    clock.advance_and_tick(minutes=2, every=timedelta(minutes=1))
    [row] = OutboxEmail.objects.filter(user_id="anon")
    assert row.template_name == "welcome" and row.status == OutboxEmail.Status.SKIPPED
    assert "no email address" in row.reason
    # The flow went on: the day's wait began when the welcome was skipped.
    entry = onboarding(api, "anon")
    assert entry["steps_done"] == 2
    cursor = Cursor.objects.get(user_id="anon")
    assert cursor.due_at == START + bound + timedelta(days=1)
    assert mail.outbox == []


def test_without_a_bound_a_user_with_no_address_is_skipped_at_once(api, clock, pushed, settings):
    settings.SEGFLOW_WAIT_FOR_ADDRESS_SECONDS = 0
    pushed()
    emit(api, "anon", "page_view")
    [row] = OutboxEmail.objects.filter(user_id="anon")
    assert row.status == OutboxEmail.Status.SKIPPED and "no email address" in row.reason
    assert onboarding(api, "anon")["steps_done"] == 2


LATER_STEP = """
def flow(ctx, rt):
    yield rt.send_email("one")
    yield rt.wait(days=1)
    second = yield rt.send_email("two")
    ctx.user.second_sent = second.success
    yield rt.wait(days=1)
    yield rt.send_email("three")

html = lambda user: "<p>hi</p>"
config = {
    "templates": {name: {"subject": name, "html": html} for name in ("one", "two", "three")},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"c": {"segments": ["all"], "behavior": "static", "flow": flow}},
}
"""


def test_a_later_step_waits_too_and_the_history_replays(api, clock, pushed, write_config):
    pushed(write_config(LATER_STEP))
    put(api, "kim", email="kim@example.com")
    assert sent("kim") == ["one"]
    api.patch("/api/users/kim", {"attributes": {"email": None}}, format="json")

    clock.advance_and_tick(days=1)  # `two` is due: no address, so it waits
    assert sent("kim") == ["one"]
    clock.advance_and_tick(minutes=10, every=timedelta(minutes=1))
    assert sent("kim") == ["one"]
    api.patch("/api/users/kim", {"attributes": {"email": "kim@example.org"}}, format="json")
    clock.advance_and_tick(minutes=1, every=timedelta(seconds=30))
    assert sent("kim", status=OutboxEmail.Status.SENT) == ["one", "two"]
    assert OutboxEmail.objects.get(user_id="kim", template_name="two").to_address == (
        "kim@example.org"
    )

    # Replayed over [one, wait, two, wait]: `two` gives back its recorded result.
    clock.advance_and_tick(days=1)
    assert sent("kim") == ["one", "two", "three"]
    assert [kind for _, kind, _ in steps("kim")] == [
        "send_email",
        "wait",
        "send_email",
        "wait",
        "send_email",
    ]
    assert api.get("/api/users/kim").json()["attributes"]["second_sent"] is True
    assert Cursor.objects.get(user_id="kim").status == Cursor.Status.COMPLETED
