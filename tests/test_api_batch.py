"""POST /api/events: many events for many users in one request, all stored or none."""

from __future__ import annotations

import pytest

from delivery.models import OutboxEmail
from segflow.models import Event, User

from .factories import EventFactory, UserFactory
from .test_api import assert_refused, send, stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def jane(db):
    """A user who is already there, with an event, for refused requests to leave alone."""
    user = UserFactory(id="jane", attributes={"email": "jane@example.com"})
    EventFactory(user=user, name="signed_up", attributes={"plan": "free"})
    return user


def test_a_batch_stores_every_event_in_order_and_processes_each(api, pushed, clock):
    pushed()  # the example config: a purchase sends `purchase-confirmation`
    api.put("/api/users/ann", {"attributes": {"email": "ann@example.com"}}, format="json")
    response = send(
        api,
        "POST",
        "/api/events",
        {
            "events": [
                {"user_id": "ann", "name": "purchase", "attributes": {"orderId": "o-1"}},
                {"user_id": "newcomer", "name": "signed_up"},
                {"user_id": "ann", "name": "purchase", "attributes": {"orderId": "o-2"}},
            ]
        },
    )
    assert response.status_code == 201, response.content
    events = response.json()["events"]
    assert [(e["user_id"], e["name"]) for e in events] == [
        ("ann", "purchase"),
        ("newcomer", "signed_up"),
        ("ann", "purchase"),
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert User.objects.filter(pk="newcomer", attributes={}).exists()
    assert set(Event.objects.values_list("pk", flat=True)) == {e["id"] for e in events}
    # Processed like single events: one confirmation per purchase, each for its own order.
    receipts = OutboxEmail.objects.filter(transaction_name="purchase-confirmation")
    assert sorted(receipts.values_list("event_id", flat=True)) == [events[0]["id"], events[2]["id"]]
    assert not Event.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        pytest.param([], "body", "must be a JSON object", id="not-an-object"),
        pytest.param({}, "events", "this field is required", id="no-events"),
        pytest.param({"events": []}, "events", "must be a non-empty", id="empty"),
        pytest.param({"events": {"a": 1}}, "events", "must be a non-empty JSON array", id="dict"),
        pytest.param({"events": [1]}, "events[0]", "must be a JSON object", id="not-an-event"),
        pytest.param(
            {"events": [{"user_id": "a", "name": "x"}, {"user_id": "b", "name": " "}]},
            "events[1].name",
            "must not be empty",
            id="second-empty-name",
        ),
        pytest.param(
            {"events": [{"user_id": "a", "name": "x"}, {"name": "x"}]},
            "events[1].user_id",
            "this field is required",
            id="no-user",
        ),
        pytest.param(
            {"events": [{"user_id": "a", "name": "x", "colour": "red"}]},
            "events[0].colour",
            "unknown field",
            id="unknown-field",
        ),
        pytest.param(
            {"events": [{"user_id": "a", "name": "x"}, {"user_id": "a/b", "name": "x"}]},
            "events[1].user_id",
            "user ids cannot contain '/'",
            id="slash-in-user-id",
        ),
        pytest.param(
            {"events": [{"user_id": "a", "name": "x", "attributes": [1]}]},
            "events[0].attributes",
            "must be a JSON object",
            id="attributes-list",
        ),
    ],
)
def test_a_bad_event_refuses_the_whole_batch_and_names_it(api, jane, body, field, problem):
    before = stored()
    error = assert_refused(send(api, "POST", "/api/events", body), 400, field)
    assert problem in error
    assert stored() == before
    assert not User.objects.filter(pk="a").exists()


def nested(levels: int, outer: type = dict) -> dict:
    """Attributes `levels` deep, their innermost value counted: objects and arrays in turn (the
    outermost an `outer`), a value beside each."""
    value: object = "leaf"
    for level in reversed(range(levels - 2)):
        value = {"n": level, "in": value} if (level % 2 == 0) == (outer is dict) else [level, value]
    return {"flat": 1, "deep": value}


@pytest.mark.parametrize("outer", [dict, list])
@pytest.mark.parametrize("levels", [2, 3, 16])
def test_attributes_may_nest_16_levels(api, jane, levels, outer):
    events = [{"user_id": "a", "name": "x", "attributes": nested(levels, outer)}]
    assert send(api, "POST", "/api/events", {"events": events}).status_code == 201
    assert Event.objects.get(user_id="a").attributes == nested(levels, outer)


@pytest.mark.parametrize("outer", [dict, list])
def test_attributes_nested_17_levels_refuse_the_batch(api, jane, outer):
    before = stored()
    events = [
        {"user_id": "a", "name": "x", "attributes": {"plan": "pro"}},
        {"user_id": "a", "name": "x", "attributes": nested(17, outer)},
    ]
    response = send(api, "POST", "/api/events", {"events": events})
    error = assert_refused(response, 400, "events[1].attributes")
    assert error == "events[1].attributes: must not be nested more than 16 levels deep"
    assert stored() == before


def test_a_batch_over_the_limit_is_refused(api, jane, settings):
    settings.SEGFLOW_MAX_EVENTS_PER_REQUEST = 3
    before = stored()
    body = {"events": [{"user_id": "a", "name": "x"}] * 4}
    error = assert_refused(send(api, "POST", "/api/events", body), 400, "events")
    assert "at most 3 events, got 4" in error
    assert stored() == before
    assert send(api, "POST", "/api/events", {"events": body["events"][:3]}).status_code == 201


def test_a_batch_needs_an_api_key(db):
    from rest_framework.test import APIClient

    response = APIClient().post(
        "/api/events", {"events": [{"user_id": "a", "name": "x"}]}, format="json"
    )
    assert response.status_code == 401
    assert not Event.objects.exists()
