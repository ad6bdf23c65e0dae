"""/v1/: the Segment tracking spec, as Segment's libraries and compatible senders speak it."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from segflow.api_keys import create_api_key
from segflow.models import ApiKey, Event, User

from .conftest import START, sent
from .test_api import assert_refused, stored

pytestmark = pytest.mark.django_db(transaction=True)


def basic(key: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


@pytest.fixture
def key(db) -> str:
    return create_api_key("segment")[1]


@pytest.fixture
def v1(key) -> APIClient:
    """A client that authenticates as Segment's libraries do: the key as the Basic user name."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(key))
    return client


@pytest.fixture
def shop(pushed, clock):
    pushed()  # the example config: a purchase sends `purchase-confirmation`


def post(client, path: str, body, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("content_type", "application/json")
    return client.generic("POST", path, data, **headers)


def ok(response) -> None:
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}


def events(user_id: str) -> list[dict]:
    return list(
        Event.objects.filter(user_id=user_id)
        .order_by("id")
        .values("name", "attributes", "message_id", "timestamp", "context")
    )


# -- what each call does -------------------------------------------------------------------------


def test_identify_creates_the_user_then_merges_traits_into_their_attributes(v1, shop):
    traits = {"email": "jane@example.com", "name": "Jane", "plan": "free"}
    ok(post(v1, "/v1/identify", {"userId": "jane", "traits": traits}))
    assert User.objects.get(pk="jane").attributes == traits
    # A new user is a user like any other: she is in `new-users` and got the welcome email.
    assert sent("jane") == ["welcome"]

    ok(post(v1, "/v1/identify", {"userId": "jane", "traits": {"plan": "pro", "name": None}}))
    assert User.objects.get(pk="jane").attributes == {"email": "jane@example.com", "plan": "pro"}
    assert not Event.objects.filter(user_id="jane").exists()  # identify records no event


def test_track_records_an_event_with_its_properties_id_time_and_context(v1, shop):
    message = {
        "userId": "jane",
        "event": "Order Completed",
        "properties": {"orderId": "o-1", "revenue": 30},
        "messageId": "ajs-1",
        "timestamp": "2026-03-02T08:59:30.000Z",
        "context": {"ip": "192.0.2.1", "library": {"name": "analytics-python"}},
        "integrations": {"All": True},  # what segflow does not use is ignored
        "anonymousId": "anon-1",
        "sentAt": "2026-03-02T08:59:31.000Z",
        "writeKey": "ignored",
    }
    ok(post(v1, "/v1/track", message))
    assert events("jane") == [
        {
            "name": "Order Completed",
            "attributes": {"orderId": "o-1", "revenue": 30},
            "message_id": "ajs-1",
            "timestamp": START - timedelta(seconds=30),
            "context": {"ip": "192.0.2.1", "library": {"name": "analytics-python"}},
        }
    ]
    assert User.objects.filter(pk="jane").exists()
    assert not User.objects.filter(pk="anon-1").exists()  # userId wins over anonymousId


def test_page_and_screen_record_events_named_page_and_screen(v1, shop):
    ok(
        post(
            v1,
            "/v1/page",
            {"userId": "jane", "name": "Pricing", "category": "Docs", "properties": {"url": "/p"}},
        )
    )
    ok(post(v1, "/v1/screen", {"userId": "jane", "name": "Home", "properties": None}))
    ok(post(v1, "/v1/page", {"userId": "jane", "name": None, "category": None}))
    assert [(e["name"], e["attributes"]) for e in events("jane")] == [
        ("page", {"url": "/p", "name": "Pricing", "category": "Docs"}),
        ("screen", {"name": "Home"}),
        ("page", {}),
    ]
    assert {e["timestamp"] for e in events("jane")} == {START}  # no timestamp: as it arrived


def test_group_merges_the_traits_under_groups_and_the_group_id(v1, shop):
    ok(post(v1, "/v1/identify", {"userId": "jane", "traits": {"email": "jane@example.com"}}))
    ok(post(v1, "/v1/group", {"userId": "jane", "groupId": "acme", "traits": {"plan": "pro"}}))
    ok(post(v1, "/v1/group", {"userId": "jane", "groupId": "acme", "traits": {"seats": 5}}))
    ok(post(v1, "/v1/group", {"userId": "jane", "groupId": 42}))
    assert User.objects.get(pk="jane").attributes == {
        "email": "jane@example.com",
        "groups": {"acme": {"plan": "pro", "seats": 5}, "42": {}},
    }


def test_alias_records_an_alias_event_and_merges_nothing(v1, shop):
    ok(post(v1, "/v1/track", {"anonymousId": "anon-1", "event": "Viewed"}))
    ok(post(v1, "/v1/alias", {"userId": "jane", "previousId": "anon-1"}))
    assert [(e["name"], e["attributes"]) for e in events("jane")] == [
        ("alias", {"previousId": "anon-1"})
    ]
    assert [e["name"] for e in events("anon-1")] == ["Viewed"]  # still its own user
    response = post(v1, "/v1/alias", {"anonymousId": "anon-2", "previousId": "anon-1"})
    assert "this field is required" in assert_refused(response, 400, "userId")


def test_a_message_with_only_an_anonymous_id_is_stored_under_it(v1, shop):
    ok(post(v1, "/v1/track", {"anonymousId": "anon-7", "event": "Viewed", "userId": None}))
    ok(post(v1, "/v1/identify", {"anonymousId": "anon-7", "userId": "", "traits": {"a": 1}}))
    assert User.objects.get(pk="anon-7").attributes == {"a": 1}
    assert [e["name"] for e in events("anon-7")] == ["Viewed"]


def test_a_repeated_message_id_is_stored_and_confirmed_once(v1, shop):
    ok(post(v1, "/v1/identify", {"userId": "jane", "traits": {"email": "j@example.com"}}))
    purchase = {"userId": "jane", "event": "purchase", "messageId": "m-1", "properties": {}}
    ok(post(v1, "/v1/track", purchase))
    ok(post(v1, "/v1/track", purchase))
    ok(post(v1, "/v1/batch", {"batch": [{**purchase, "type": "track"}] * 3}))
    assert [e["message_id"] for e in events("jane")] == ["m-1"]
    assert sent("jane", transaction_name="purchase-confirmation") == ["purchase-confirmation"]


def test_a_backfilled_purchase_sends_no_confirmation(v1, shop):
    ok(post(v1, "/v1/identify", {"userId": "jane", "traits": {"email": "j@example.com"}}))
    old = {"userId": "jane", "event": "purchase", "timestamp": "2025-06-01T12:00:00+02:00"}
    ok(post(v1, "/v1/track", old))
    assert events("jane")[0]["timestamp"] == START.replace(year=2025, month=6, day=1, hour=10)
    assert sent("jane", transaction_name="purchase-confirmation") == []


# -- batch ---------------------------------------------------------------------------------------


def test_a_batch_does_every_call_in_one_request(v1, shop):
    body = {
        "batch": [
            {"type": "identify", "userId": "jane", "traits": {"email": "jane@example.com"}},
            {"type": "track", "userId": "jane", "event": "purchase", "messageId": "m-1"},
            {"type": "page", "userId": "jane", "name": "Thanks", "messageId": "m-2"},
            {"type": "screen", "anonymousId": "anon-1", "name": "Home"},
            {"type": "group", "userId": "jane", "groupId": "acme", "traits": {"plan": "pro"}},
            {"type": "alias", "userId": "jane", "previousId": "anon-1"},
            {"type": "identify", "userId": "jane", "traits": {"name": "Jane"}},
        ],
        "context": {"library": {"name": "analytics-python"}, "ip": "192.0.2.1"},
        "sentAt": "2026-03-02T09:00:00Z",
    }
    ok(post(v1, "/v1/batch", body))
    assert User.objects.get(pk="jane").attributes == {
        "email": "jane@example.com",
        "name": "Jane",
        "groups": {"acme": {"plan": "pro"}},
    }
    assert [(e["name"], e["message_id"]) for e in events("jane")] == [
        ("purchase", "m-1"),
        ("page", "m-2"),
        ("alias", None),
    ]
    # The batch's context is under each message's own.
    assert events("anon-1")[0]["context"] == {
        "library": {"name": "analytics-python"},
        "ip": "192.0.2.1",
    }
    # Processed after the whole batch: the confirmation has the name identified after it.
    assert sent("jane", transaction_name="purchase-confirmation") == ["purchase-confirmation"]
    assert ok(post(v1, "/v1/batch", {"batch": []})) is None  # nothing to do


@pytest.mark.parametrize(
    ("message", "field", "problem"),
    [
        pytest.param({"userId": "bob"}, "batch[1].type", "this field is required", id="no-type"),
        pytest.param(
            {"type": "purchase", "userId": "bob"}, "batch[1].type", "must be one of", id="type"
        ),
        pytest.param(
            {"type": "track", "event": "x"}, "batch[1].userId", "or anonymousId", id="who"
        ),
        pytest.param({"type": "track", "userId": "bob"}, "batch[1].event", "required", id="event"),
        pytest.param(
            {"type": "track", "userId": "a/b", "event": "x"},
            "batch[1].userId",
            "user ids cannot contain '/'",
            id="slash",
        ),
        pytest.param(
            {"type": "track", "userId": "bob", "event": "x", "properties": [1]},
            "batch[1].properties",
            "must be a JSON object",
            id="properties",
        ),
        pytest.param(
            {"type": "identify", "userId": "bob", "traits": "x"},
            "batch[1].traits",
            "must be a JSON object",
            id="traits",
        ),
        pytest.param(
            {"type": "track", "userId": "bob", "event": "x", "context": 5},
            "batch[1].context",
            "must be a JSON object",
            id="context",
        ),
        pytest.param(
            {"type": "track", "userId": "bob", "event": "x", "timestamp": "2026-03-02T09:00:00"},
            "batch[1].timestamp",
            "must have a UTC offset",
            id="naive-time",
        ),
        pytest.param(
            {"type": "track", "userId": "bob", "event": "x", "timestamp": "2026-03-04T09:00:00Z"},
            "batch[1].timestamp",
            "must not be more than 86400 seconds in the future",
            id="future",
        ),
        pytest.param(
            {"type": "track", "userId": "bob", "event": "x", "messageId": ""},
            "batch[1].messageId",
            "must not be empty",
            id="message-id",
        ),
        pytest.param({"type": "group", "userId": "bob"}, "batch[1].groupId", "required", id="gid"),
        pytest.param(
            {"type": "alias", "userId": "bob"}, "batch[1].previousId", "required", id="previous"
        ),
        pytest.param(
            {"type": "page", "userId": "bob", "name": 5},
            "batch[1].name",
            "must be a string",
            id="page-name",
        ),
        pytest.param("track", "batch[1]", "must be a JSON object", id="not-an-object"),
    ],
)
def test_a_bad_message_refuses_the_whole_batch_naming_it(v1, shop, message, field, problem):
    before = stored()
    good = {"type": "identify", "userId": "bob", "traits": {"email": "bob@example.com"}}
    response = post(v1, "/v1/batch", {"batch": [good, message]})
    assert problem in assert_refused(response, 400, field)
    assert stored() == before
    assert not User.objects.filter(pk="bob").exists()


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({}, "batch", "this field is required"),
        ({"batch": {"type": "track"}}, "batch", "must be a JSON array"),
        ([], "body", "must be a JSON object"),
    ],
)
def test_a_batch_without_a_list_of_messages_is_refused(v1, body, field, problem):
    assert problem in assert_refused(post(v1, "/v1/batch", body), 400, field)


def test_single_calls_name_the_field_without_a_prefix(v1, shop):
    response = post(v1, "/v1/track", {"userId": "bob", "event": "x", "timestamp": "soon"})
    assert "must be an ISO 8601 time" in assert_refused(response, 400, "timestamp")
    response = post(v1, "/v1/identify", ["x"])
    assert "must be a JSON object" in assert_refused(response, 400, "body")
    assert not User.objects.exists()


# -- limits, encodings, content types -------------------------------------------------------------


def test_over_32_kb_a_message_is_refused_naming_the_limit(v1, shop):
    big = {"userId": "bob", "event": "x", "properties": {"text": "x" * (32 * 1024)}}
    response = post(v1, "/v1/track", big)
    error = assert_refused(response, 400, "body")
    assert error == "body: larger than the limit of 32768 bytes (32 KB per message)"
    small = {"type": "track", "userId": "bob", "event": "x"}
    response = post(v1, "/v1/batch", {"batch": [small, {**big, "type": "track"}]})
    error = assert_refused(response, 400, "batch[1]")
    assert error == "batch[1]: larger than the limit of 32768 bytes (32 KB per message)"
    assert not Event.objects.exists()


def test_a_batched_message_is_measured_as_json_writes_it_up_to_the_last_byte(v1, shop):
    """Floats written as Python writes them (1e-05) count to the limit, byte for byte."""

    def message(size: int) -> dict:
        found = {
            "type": "track",
            "userId": "bob",
            "event": "x",
            "properties": {"f": [1e-05] * 4000},
        }
        written = len(json.dumps(found, ensure_ascii=False, separators=(",", ":")).encode())
        found["properties"]["pad"] = "x" * (size - written - len(',"pad":""'))
        return found

    ok(post(v1, "/v1/batch", {"batch": [message(32 * 1024)]}))
    response = post(v1, "/v1/batch", {"batch": [message(32 * 1024 + 1)]})
    assert assert_refused(response, 400, "batch[0]").startswith("batch[0]: larger than the limit")
    huge = {"type": "track", "userId": "bob", "event": "x", "properties": {"n": 2**70}}
    ok(post(v1, "/v1/batch", {"batch": [huge]}))
    assert Event.objects.count() == 2


def test_a_batch_may_carry_500_kb_and_no_more(v1, shop):
    message = {"type": "track", "userId": "bob", "event": "x", "properties": {"t": "x" * 31_000}}
    sixteen = {"batch": [message] * 16}  # about 497 KB
    assert len(json.dumps(sixteen)) < 500 * 1024
    ok(post(v1, "/v1/batch", sixteen))
    assert Event.objects.count() == 16

    seventeen = {"batch": [message] * 17}
    response = post(v1, "/v1/batch", seventeen)
    error = assert_refused(response, 400, "body")
    assert error == "body: larger than the limit of 512000 bytes (500 KB per batch)"
    # Compressed, it is the size it unpacks to that counts.
    response = post(
        v1, "/v1/batch", gzip.compress(json.dumps(seventeen).encode()), HTTP_CONTENT_ENCODING="gzip"
    )
    assert_refused(response, 400, "body")
    assert Event.objects.count() == 16


def test_gzip_bodies_are_accepted(v1, shop):
    body = {"batch": [{"type": "track", "userId": "bob", "event": "x", "messageId": "g-1"}]}
    ok(
        post(
            v1, "/v1/batch", gzip.compress(json.dumps(body).encode()), HTTP_CONTENT_ENCODING="gzip"
        )
    )
    assert [e["message_id"] for e in events("bob")] == ["g-1"]

    response = post(v1, "/v1/batch", b"not gzip", HTTP_CONTENT_ENCODING="gzip")
    assert "not valid gzip" in assert_refused(response, 400, "body")
    truncated = gzip.compress(json.dumps(body).encode())[:-12]
    response = post(v1, "/v1/batch", truncated, HTTP_CONTENT_ENCODING="gzip")
    assert "cut short" in assert_refused(response, 400, "body")
    response = post(v1, "/v1/batch", json.dumps(body).encode(), HTTP_CONTENT_ENCODING="br")
    assert "'br' is not accepted" in assert_refused(response, 415, "Content-Encoding")


def test_json_labelled_text_plain_is_accepted_and_other_types_are_not(v1, shop):
    ok(post(v1, "/v1/track", {"userId": "bob", "event": "x"}, content_type="text/plain"))
    response = post(
        v1, "/v1/track", b"userId=bob", content_type="application/x-www-form-urlencoded"
    )
    assert_refused(response, 415, "Content-Type")
    assert Event.objects.count() == 1


def test_bad_json_is_refused(v1):
    response = post(v1, "/v1/track", b'{"userId": "bob", "event": NaN}')
    assert "malformed JSON" in assert_refused(response, 400, "body")


# -- authentication ------------------------------------------------------------------------------


def test_the_api_key_is_the_basic_user_name_or_a_bearer_token(key, shop):
    client = APIClient()
    message = {"userId": "bob", "event": "x"}
    ok(post(client, "/v1/track", message, HTTP_AUTHORIZATION=basic(key)))
    ok(post(client, "/v1/track", message, HTTP_AUTHORIZATION=basic(key, "ignored")))
    ok(post(client, "/v1/track", message, HTTP_AUTHORIZATION=f"Bearer {key}"))
    assert Event.objects.count() == 3


@pytest.mark.parametrize(
    ("authorization", "problem"),
    [
        (None, "missing; send HTTP Basic auth with the API key as the user name"),
        ("Basic " + base64.b64encode(b"sf_nope:").decode(), "unknown or revoked API key"),
        ("Basic !!!", "not valid base64"),
        ("Basic " + base64.b64encode(b":secret").decode(), "the API key goes in the user name"),
        ("Token abc", "expected 'Basic <base64 of api key:>'"),
    ],
)
def test_without_a_valid_key_the_answer_is_401(db, authorization, problem):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = post(APIClient(), "/v1/track", {"userId": "bob", "event": "x"}, **headers)
    assert problem in assert_refused(response, 401, "Authorization")
    assert response["WWW-Authenticate"] == 'Basic realm="segflow"'
    assert not Event.objects.exists()


def test_a_revoked_key_is_refused(v1, key):
    ApiKey.objects.update(revoked_at=timezone.now())
    response = post(v1, "/v1/track", {"userId": "bob", "event": "x"})
    assert "unknown or revoked" in assert_refused(response, 401, "Authorization")


def test_other_paths_and_methods_answer_in_json(v1):
    response = v1.get("/v1/track")
    assert "GET is not allowed" in assert_refused(response, 405, "method")
    response = post(v1, "/v1/t", {"userId": "bob"})
    assert response.status_code == 404
    assert "/v1/identify" in response.json()["error"]


# -- lean -----------------------------------------------------------------------------------------


def test_a_batch_costs_a_few_statements_however_many_messages_it_has(v1, shop, settings):
    """Stored in one transaction: the key, the message ids already stored, the users' locks, the
    new users, one insert for all the events and one read of their ids, one write per user whose
    attributes change. (Processing, after commit, is a task of its own: here handed to a broker
    that keeps it.)"""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SEGFLOW_TASKS_INLINE = False

    def statements(count: int, first: int) -> int:
        body = {
            "batch": [
                {"type": "track", "userId": f"u{n % 5}", "event": "x", "messageId": f"m-{n}"}
                for n in range(first, first + count)
            ]
            + [{"type": "identify", "userId": f"new-{first}", "traits": {"plan": "pro"}}]
        }
        with mock.patch("segflow.dispatch.current_app"), CaptureQueriesContext(connection) as q:
            ok(post(v1, "/v1/batch", body))
        return len(q.captured_queries)

    statements(1, 1000)  # the key's first use of the minute is written down: not counted here
    assert statements(10, 0) == statements(100, 10) <= 12
    assert Event.objects.count() == 111


def test_a_push_key_cannot_send_to_v1(client, db):
    import base64

    from segflow.api_keys import create_api_key

    _, key = create_api_key("ci", scope="push")
    response = client.post(
        "/v1/track",
        data={"userId": "jane", "event": "purchase"},
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{key}:".encode()).decode(),
    )
    assert response.status_code == 403
    assert "scope 'push'" in response.json()["error"]
