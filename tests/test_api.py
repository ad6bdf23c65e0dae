"""The HTTP API as a client sees it: what it stores, what it returns, and what it refuses."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.models import Cursor, CursorStep
from delivery.models import OutboxEmail
from segflow.api_keys import create_api_key, revoke_api_keys
from segflow.models import ApiKey, Event, User
from segflow.pipeline import tick
from segments.models import SegmentMembership

from .conftest import START, sent
from .factories import EventFactory, UserFactory

JSON = "application/json"


def url(user_id: str, events: bool = False) -> str:
    return f"/api/users/{quote(user_id, safe='')}" + ("/events" if events else "")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def send(api, method: str, path: str, body, content_type: str = JSON):
    """A request with `body` sent as is (bytes) or as JSON (anything else)."""
    if not isinstance(body, bytes):
        body = json.dumps(body)
    return api.generic(method, path, body, content_type=content_type)


def stored() -> dict:
    """Everything a write could change, to compare before and after a refused request."""
    return {
        "users": list(
            User.objects.order_by("id").values_list("id", "attributes", "version", "updated_at")
        ),
        "events": list(
            Event.objects.order_by("id").values_list("id", "user_id", "name", "attributes")
        ),
        "outbox": OutboxEmail.objects.count(),
    }


def assert_refused(response, status: int, field: str) -> str:
    """The request was refused with `status`, as JSON whose error starts with the field's name."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == JSON
    body = response.json()
    assert body["error"].startswith(f"{field}: "), body
    if "fields" in body:
        assert field in body["fields"], body
    return body["error"]


@pytest.fixture
def jane(db):
    """A user who is already there, with an event, for refused requests to leave alone."""
    user = UserFactory(id="jane", attributes={"email": "jane@example.com", "name": "Jane"})
    EventFactory(user=user, name="signed_up", attributes={"plan": "free"})
    return user


# -- What a client stores and reads back ---------------------------------------------------------


@pytest.mark.django_db
def test_put_creates_the_user_then_replaces_all_their_attributes(api, clock):
    first = api.put(
        url("jane"), {"attributes": {"email": "jane@example.com", "name": "Jane"}}, format="json"
    )
    assert first.status_code == 201
    assert first.json()["id"] == "jane"
    assert first.json()["attributes"] == {"email": "jane@example.com", "name": "Jane"}
    assert at(first.json()["created_at"]) == START

    clock.advance(hours=1)
    second = api.put(
        url("jane"), {"attributes": {"name": "Jane Doe", "plan": "pro"}}, format="json"
    )
    assert second.status_code == 200
    # A PUT is the whole profile: the email the first one set is gone.
    assert second.json()["attributes"] == {"name": "Jane Doe", "plan": "pro"}
    assert at(second.json()["created_at"]) == START
    assert at(second.json()["updated_at"]) == START + timedelta(hours=1)
    assert User.objects.get(pk="jane").attributes == {"name": "Jane Doe", "plan": "pro"}
    assert User.objects.count() == 1

    again = api.put(url("jane"), {"attributes": {"name": "Jane Doe", "plan": "pro"}}, format="json")
    assert again.status_code == 200


@pytest.mark.django_db
def test_patch_merges_attributes_and_null_removes_one(api):
    api.put(
        url("jane"),
        {
            "attributes": {
                "name": "Jane",
                "plan": "pro",
                "prefs": {"news": True, "tips": True},
                "tags": ["a", "b"],
            }
        },
        format="json",
    )
    response = api.patch(
        url("jane"),
        {
            "attributes": {
                "plan": None,
                "age": 30,
                "prefs": {"tips": None, "digest": "weekly"},
                "tags": ["c"],
            }
        },
        format="json",
    )
    assert response.status_code == 200
    expected = {
        "name": "Jane",
        "age": 30,
        "prefs": {"news": True, "digest": "weekly"},
        "tags": ["c"],
    }
    assert response.json()["attributes"] == expected
    assert api.get(url("jane")).json()["attributes"] == expected

    # Removing an attribute that is not there, or patching nothing, changes nothing.
    response = api.patch(url("jane"), {"attributes": {"missing": None}}, format="json")
    assert response.status_code == 200 and response.json()["attributes"] == expected
    assert (
        api.patch(url("jane"), {"attributes": {}}, format="json").json()["attributes"] == expected
    )


@pytest.mark.django_db(transaction=True)
def test_get_shows_the_segments_and_campaigns_a_new_user_entered(api, clock, pushed):
    pushed()
    response = api.put(
        url("jane"),
        {
            "attributes": {
                "email": "jane@example.com",
                "name": "Jane",
                "lastLoginAt": clock.now.isoformat(),
            }
        },
        format="json",
    )
    assert response.status_code == 201

    body = api.get(url("jane")).json()
    assert set(body) == {"id", "attributes", "created_at", "updated_at", "segments", "campaigns"}
    assert body["id"] == "jane"
    assert body["attributes"]["email"] == "jane@example.com"
    assert at(body["created_at"]) == at(body["updated_at"]) == START
    assert body["segments"] == ["new-users"]
    [onboarding] = body["campaigns"]
    assert onboarding["campaign"] == "onboarding"
    assert onboarding["status"] == "active"
    assert onboarding["steps_done"] == 2  # the welcome email, and the day's wait begun
    assert at(onboarding["entered_at"]) == START
    assert at(onboarding["next_step_at"]) == START + timedelta(days=1)
    assert onboarding["ended_at"] is None
    assert sent("jane") == ["welcome"]

    # A week on she is no longer new: the schedule takes her out of the segment.
    clock.advance(days=8)
    tick()
    assert api.get(url("jane")).json()["segments"] == []


@pytest.mark.django_db(transaction=True)
def test_delete_removes_the_user_and_everything_about_them(api, clock, pushed):
    pushed()
    for user_id in ("jane", "sam"):
        created = api.put(
            url(user_id),
            {
                "attributes": {
                    "email": f"{user_id}@example.com",
                    "name": user_id,
                    "lastLoginAt": clock.now.isoformat(),
                }
            },
            format="json",
        )
        assert created.status_code == 201
        bought = api.post(
            url(user_id, events=True),
            {"name": "purchase", "attributes": {"amount": 1200}},
            format="json",
        )
        assert bought.status_code == 201

    def rows(user_id):
        return {
            "events": Event.objects.filter(user_id=user_id).count(),
            "outbox": OutboxEmail.objects.filter(user_id=user_id).count(),
            "cursors": Cursor.objects.filter(user_id=user_id).count(),
            "cursor steps": CursorStep.objects.filter(cursor__user_id=user_id).count(),
            "memberships": SegmentMembership.objects.filter(user_id=user_id).count(),
        }

    before = rows("sam")
    # Both have an event, a welcome and an order confirmation, onboarding and two segments.
    assert rows("jane") == before
    assert before["events"] == 1 and before["outbox"] == 2 and before["cursors"] == 1
    assert before["memberships"] == 2 and before["cursor steps"] >= 1

    response = api.delete(url("jane"))
    assert response.status_code == 204
    assert response.content == b""

    assert_refused(api.get(url("jane")), 404, "id")
    assert_refused(api.get(url("jane", events=True)), 404, "id")
    assert not User.objects.filter(pk="jane").exists()
    assert rows("jane") == dict.fromkeys(before, 0)
    assert rows("sam") == before  # nobody else lost anything
    assert api.get(url("sam")).json()["segments"] == ["big-spenders", "new-users"]

    assert_refused(api.delete(url("jane")), 404, "id")  # a second DELETE finds nobody


@pytest.mark.django_db
def test_events_are_listed_newest_first_a_page_at_a_time(api, clock):
    for n in range(1, 6):
        response = api.post(
            url("jane", events=True), {"name": f"step_{n}", "attributes": {"n": n}}, format="json"
        )
        assert response.status_code == 201
        assert response.json()["name"] == f"step_{n}"
        assert response.json()["user_id"] == "jane"
        clock.advance(minutes=1)
    # Recorded last, but it happened before all the others: it is listed last.
    EventFactory(user_id="jane", name="imported", created_at=START - timedelta(days=1))

    body = api.get(url("jane", events=True)).json()
    assert body["count"] == 6
    assert [e["name"] for e in body["results"]] == [
        "step_5",
        "step_4",
        "step_3",
        "step_2",
        "step_1",
        "imported",
    ]
    newest = body["results"][0]
    assert set(newest) == {
        "id",
        "user_id",
        "name",
        "attributes",
        "timestamp",
        "created_at",
        "message_id",
        "context",
    }
    assert newest["attributes"] == {"n": 5}
    assert at(newest["created_at"]) == at(newest["timestamp"]) == START + timedelta(minutes=4)
    assert newest["message_id"] is None and newest["context"] == {}

    first = api.get(url("jane", events=True), {"page_size": 2}).json()
    assert first["count"] == 6 and first["previous"] is None
    assert [e["name"] for e in first["results"]] == ["step_5", "step_4"]
    second = api.get(url("jane", events=True), {"page_size": 2, "page": 2}).json()
    assert [e["name"] for e in second["results"]] == ["step_3", "step_2"]
    assert second["previous"] is not None

    # Following `next` walks every event once.
    names, link = [], first["next"]
    names += [e["name"] for e in first["results"]]
    while link:
        page = api.get(link).json()
        names += [e["name"] for e in page["results"]]
        link = page["next"]
    assert names == ["step_5", "step_4", "step_3", "step_2", "step_1", "imported"]

    # Another user's events are not in the list.
    api.post(url("sam", events=True), {"name": "step_1"}, format="json")
    assert api.get(url("jane", events=True)).json()["count"] == 6


@pytest.mark.django_db
def test_a_page_holds_at_most_500_events(api):
    user = UserFactory(id="busy")
    Event.objects.bulk_create(Event(user=user, name=f"e{n}") for n in range(501))
    body = api.get(url("busy", events=True), {"page_size": 10_000}).json()
    assert body["count"] == 501
    assert len(body["results"]) == 500
    assert body["next"] is not None
    assert len(api.get(url("busy", events=True)).json()["results"]) == 50  # the default


@pytest.mark.django_db
def test_an_event_for_an_unknown_user_creates_the_user(api):
    response = api.post(url("newcomer", events=True), {"name": "signed_up"}, format="json")
    assert response.status_code == 201
    assert response.json()["attributes"] == {}

    user = api.get(url("newcomer"))
    assert user.status_code == 200
    assert user.json()["attributes"] == {}
    assert [e["name"] for e in api.get(url("newcomer", events=True)).json()["results"]] == [
        "signed_up"
    ]
    # The user is there now: a PUT replaces (200) rather than creates.
    response = api.put(url("newcomer"), {"attributes": {"name": "New"}}, format="json")
    assert response.status_code == 200
    assert Event.objects.filter(user_id="newcomer").count() == 1


@pytest.mark.django_db
def test_ids_and_names_at_the_longest_allowed_are_kept_whole(api):
    user_id = "é" * 255  # 255 characters, 510 bytes
    name = "n" * 255
    assert api.put(url(user_id), {"attributes": {}}, format="json").status_code == 201
    event = api.post(url(user_id, events=True), {"name": name}, format="json")
    assert event.status_code == 201
    assert api.get(url(user_id)).json()["id"] == user_id
    assert Event.objects.get(pk=event.json()["id"]).name == name


# -- Who may call it ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_needs_no_key():
    response = APIClient().get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_a_valid_key_works_under_any_case_of_the_scheme_and_is_marked_used(db):
    row, key = create_api_key("app")
    assert row.last_used_at is None
    client = APIClient(HTTP_AUTHORIZATION=f"bearer {key}")
    assert client.put(url("jane"), {"attributes": {}}, format="json").status_code == 201
    row.refresh_from_db()
    assert row.last_used_at is not None


def _revoked_key() -> str:
    row, key = create_api_key("old")
    ApiKey.objects.filter(pk=row.pk).update(revoked_at=timezone.now())
    return key


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization, message",
    [
        pytest.param(None, "Authorization: missing", id="no-header"),
        pytest.param("Basic amFuZTpzZWNyZXQ=", "Authorization: expected 'Bearer", id="basic"),
        pytest.param("Token {key}", "Authorization: expected 'Bearer", id="token-scheme"),
        pytest.param("{key}", "Authorization: expected 'Bearer", id="no-scheme"),
        pytest.param("Bearer", "Authorization: expected 'Bearer", id="no-key"),
        pytest.param("Bearer sf_not-a-key", "Authorization: unknown or revoked", id="unknown-key"),
        pytest.param("Bearer {key}x", "Authorization: unknown or revoked", id="key-plus-one"),
        pytest.param("Bearer {revoked}", "Authorization: unknown or revoked", id="revoked-key"),
    ],
)
@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/users/jane", None),
        ("PUT", "/api/users/jane", {"attributes": {"name": "Mallory"}}),
        ("PATCH", "/api/users/jane", {"attributes": {"name": "Mallory"}}),
        ("DELETE", "/api/users/jane", None),
        ("POST", "/api/users/mallory/events", {"name": "purchase"}),
        ("GET", "/api/users/jane/events", None),
    ],
)
def test_a_request_without_a_valid_key_is_refused_and_changes_nothing(
    jane, authorization, message, method, path, body
):
    _, key = create_api_key("app")
    client = APIClient()
    if authorization is not None:
        header = authorization.format(key=key, revoked=_revoked_key())
        client.credentials(HTTP_AUTHORIZATION=header)
    before = stored()
    response = send(client, method, path, body if body is not None else b"")
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == JSON
    assert message in response.json()["error"]
    assert response["WWW-Authenticate"] == 'Bearer realm="segflow"'
    assert stored() == before


@pytest.mark.django_db
def test_a_key_stops_working_once_revoked(api, jane):
    assert api.get(url("jane")).status_code == 200
    revoke_api_keys(ApiKey.objects.all())  # as the admin does
    response = api.get(url("jane"))
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]


# -- What it refuses, and that a refused request stores nothing ---------------------------------

WRITES = [
    pytest.param("PUT", "/api/users/jane", id="put"),
    pytest.param("PATCH", "/api/users/jane", id="patch"),
    pytest.param("POST", "/api/users/newcomer/events", id="event"),
]


def valid_body(method: str, **attributes) -> dict:
    if method == "POST":
        return {"name": "purchase", "attributes": attributes}
    return {"attributes": attributes}


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"attributes": {"name": "Jo"', id="cut-short"),
        pytest.param(b"{'attributes': {}}", id="single-quotes"),
        pytest.param(b'{"attributes": {}, }', id="trailing-comma"),
        pytest.param(b'{"attributes": {}} {"attributes": {}}', id="two-documents"),
        pytest.param(b"attributes=1&name=x", id="form-encoded"),
        pytest.param(b'{"attributes": {"a": 1}} // note', id="comment"),
    ],
)
def test_malformed_json_is_refused(api, jane, method, path, raw):
    before = stored()
    error = assert_refused(send(api, method, path, raw), 400, "body")
    assert "malformed JSON" in error
    assert stored() == before


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "value, kind",
    [
        ([{"attributes": {"a": 1}}], "an array"),
        ([], "an array"),
        ("attributes", "a string"),
        (None, "null"),
        (42, "a number"),
        (True, "a boolean"),
    ],
)
def test_a_body_that_is_not_an_object_is_refused(api, jane, method, path, value, kind):
    before = stored()
    error = assert_refused(send(api, method, path, value), 400, "body")
    assert f"must be a JSON object, got {kind}" in error
    assert stored() == before


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "value, kind",
    [
        ([{"name": "Mallory"}], "an array"),
        ([], "an array"),
        ("name=Mallory", "a string"),
        (None, "null"),
        (7, "a number"),
        (False, "a boolean"),
    ],
)
def test_attributes_that_are_not_an_object_are_refused(api, jane, method, path, value, kind):
    body = valid_body(method)
    body["attributes"] = value
    before = stored()
    error = assert_refused(send(api, method, path, body), 400, "attributes")
    assert f"must be a JSON object, got {kind}" in error
    assert stored() == before


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("raw", [b"{}", b""], ids=["empty-object", "no-body"])
def test_a_put_or_patch_without_attributes_is_refused(api, jane, method, raw):
    before = stored()
    error = assert_refused(send(api, method, url("jane"), raw), 400, "attributes")
    assert "required" in error
    assert stored() == before


@pytest.mark.parametrize(
    "method, path, body, field",
    [
        ("PUT", "/api/users/jane", {"attributes": {}, "email": "m@example.com"}, "email"),
        ("PUT", "/api/users/jane", {"attribute": {"name": "Mallory"}}, "attribute"),
        ("PATCH", "/api/users/jane", {"attributes": {}, "id": "mallory"}, "id"),
        (
            "POST",
            "/api/users/newcomer/events",
            {"name": "purchase", "properties": {}},
            "properties",
        ),
        ("POST", "/api/users/newcomer/events", {"name": "purchase", "userId": "jane"}, "userId"),
        ("POST", "/api/users/newcomer/events", {"event": "purchase"}, "event"),
    ],
)
def test_an_unknown_field_is_refused(api, jane, method, path, body, field):
    before = stored()
    error = assert_refused(send(api, method, path, body), 400, field)
    assert "unknown field" in error
    assert stored() == before


@pytest.mark.parametrize(
    "body, problem",
    [
        pytest.param({"attributes": {"amount": 5}}, "required", id="missing"),
        pytest.param({"name": ""}, "must not be empty", id="empty"),
        pytest.param({"name": "   "}, "must not be empty", id="whitespace"),
        pytest.param({"name": "\t\n"}, "must not be empty", id="tab-newline"),
        pytest.param({"name": "n" * 256}, "at most 255 characters, got 256", id="256-characters"),
        pytest.param({"name": 42}, "must be a string, got a number", id="number"),
        pytest.param({"name": None}, "must be a string, got null", id="null"),
        pytest.param({"name": ["purchase"]}, "must be a string, got an array", id="array"),
        pytest.param({"name": {"n": 1}}, "must be a string, got an object", id="object"),
        pytest.param({"name": True}, "must be a string, got a boolean", id="boolean"),
        pytest.param({"name": "sign\nup"}, "control characters", id="newline-inside"),
        pytest.param({"name": "nul\u0000"}, "control characters", id="nul"),
    ],
)
def test_a_bad_event_name_is_refused(api, jane, body, problem):
    before = stored()
    response = send(api, "POST", url("newcomer", events=True), body)
    error = assert_refused(response, 400, "name")
    assert problem in error
    assert stored() == before  # not even the unknown user was created


LONG_ID = "u" * 256


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", url(LONG_ID), {"attributes": {"name": "Long"}}),
        ("PATCH", url(LONG_ID), {"attributes": {"name": "Long"}}),
        ("POST", url(LONG_ID, events=True), {"name": "purchase"}),
    ],
)
def test_a_user_id_of_256_characters_is_refused(api, jane, method, path, body):
    before = stored()
    error = assert_refused(send(api, method, path, body), 400, "id")
    assert "at most 255 characters, got 256" in error
    assert stored() == before


@pytest.mark.parametrize(
    "method, path",
    [("GET", url(LONG_ID)), ("DELETE", url(LONG_ID)), ("GET", url(LONG_ID, events=True))],
)
def test_a_user_id_of_256_characters_is_nobody(api, jane, method, path):
    before = stored()
    assert_refused(send(api, method, path, b""), 404, "id")
    assert stored() == before


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", "/api/users/", {"attributes": {"name": "Nobody"}}),
        ("PUT", "/api/users", {"attributes": {"name": "Nobody"}}),
        ("PATCH", "/api/users/", {"attributes": {"name": "Nobody"}}),
        ("GET", "/api/users/", None),
        ("DELETE", "/api/users/", None),
        ("POST", "/api/users//events", {"name": "purchase"}),
        ("GET", "/api/users//events", None),
        ("PUT", "/api/users/%20%20", {"attributes": {"name": "Nobody"}}),
        ("POST", "/api/users/%20/events", {"name": "purchase"}),
    ],
)
def test_an_empty_user_id_is_refused(api, jane, method, path, body):
    before = stored()
    error = assert_refused(send(api, method, path, body if body is not None else b""), 400, "id")
    assert "must not be empty" in error
    assert stored() == before


def nested(levels: int, leaf=1, key: str = "a"):
    value = leaf
    for _ in range(levels):
        value = {key: value}
    return value


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param(nested(40), id="objects-40-deep"),
        pytest.param({"a": json.loads("[" * 40 + "]" * 40)}, id="arrays-40-deep"),
        pytest.param({"profile": nested(15)}, id="one-level-over-the-limit"),
    ],
)
def test_attributes_nested_too_deeply_are_refused(api, jane, method, path, attributes):
    body = valid_body(method)
    body["attributes"] = attributes
    before = stored()
    error = assert_refused(send(api, method, path, body), 400, "attributes")
    assert "nested" in error
    assert stored() == before


@pytest.mark.django_db
@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "profile",
    [
        pytest.param(nested(6, leaf=[1, {"x": "y"}]), id="a-few-levels"),
        pytest.param(nested(14), id="the-deepest-allowed"),
    ],
)
def test_attributes_nested_within_the_limit_are_kept(api, method, path, profile):
    UserFactory(id="jane")
    response = send(api, method, path, valid_body(method, profile=profile))
    assert response.status_code in (200, 201), response.content
    assert response.json()["attributes"]["profile"] == profile
    if method == "POST":
        assert Event.objects.get(pk=response.json()["id"]).attributes == {"profile": profile}
    else:
        assert api.get(url("jane")).json()["attributes"]["profile"] == profile


def body_of_size(method: str, size: int) -> bytes:
    """A valid JSON body of exactly `size` bytes."""
    empty = json.dumps(valid_body(method, padding=""))
    return json.dumps(valid_body(method, padding="x" * (size - len(empty)))).encode()


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize("limit", [None, 1000], ids=["default-limit", "limit-1000"])
def test_a_body_over_the_size_limit_is_refused_with_413(api, jane, settings, method, path, limit):
    if limit is not None:
        settings.SEGFLOW_MAX_BODY_BYTES = limit
    limit = settings.SEGFLOW_MAX_BODY_BYTES
    before = stored()
    error = assert_refused(send(api, method, path, body_of_size(method, limit + 1)), 413, "body")
    assert str(limit) in error
    assert stored() == before

    response = send(api, method, path, body_of_size(method, limit))
    assert response.status_code in (200, 201), response.content
    assert response.json()["attributes"]["padding"].startswith("xxx")


@pytest.mark.parametrize("method, path", WRITES)
def test_a_body_of_3_megabytes_is_refused_with_413(api, jane, method, path):
    before = stored()
    assert_refused(send(api, method, path, body_of_size(method, 3_000_000)), 413, "body")
    assert stored() == before


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
def test_numbers_json_cannot_hold_are_refused(api, jane, method, path, number):
    raw = json.dumps(valid_body(method, score=0)).encode().replace(b"0", number)
    before = stored()
    assert_refused(send(api, method, path, raw), 400, "body")
    assert stored() == before


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 100_000, id="open-brackets"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="closed-brackets"),
        pytest.param(b'{"attributes": {"a": ' + b"[" * 100_000, id="inside-attributes"),
    ],
)
def test_json_nested_100000_levels_is_refused(api, jane, method, path, raw):
    before = stored()
    assert_refused(send(api, method, path, raw), 400, "body")
    assert stored() == before


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ],
)
def test_a_body_that_is_not_declared_json_is_refused_with_415(
    api, jane, method, path, content_type
):
    before = stored()
    response = send(
        api, method, path, valid_body(method, name="Mallory"), content_type=content_type
    )
    error = assert_refused(response, 415, "Content-Type")
    assert content_type.split(";")[0] in error
    assert stored() == before


@pytest.mark.parametrize("method, path", WRITES)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"attributes": {"name": "\xff\xfe"}, "name": "x"}', id="invalid-bytes"),
        pytest.param(b'{"attributes": {"name": "Jos\xe9"}, "name": "x"}', id="latin-1"),
        pytest.param(
            b'{"attributes": {"name": "\xed\xa0\x80"}, "name": "x"}', id="encoded-surrogate"
        ),
        pytest.param(b'{"attributes": {"name": "\\ud800"}, "name": "x"}', id="escaped-surrogate"),
        pytest.param(b'{"attributes": {"\\udfff": 1}, "name": "x"}', id="surrogate-key"),
    ],
)
def test_text_that_is_not_valid_unicode_is_refused(api, jane, method, path, raw):
    if method != "POST":
        raw = raw.replace(b', "name": "x"', b"")
    before = stored()
    assert_refused(send(api, method, path, raw), 400, "body")
    assert stored() == before


@pytest.mark.django_db
def test_a_name_with_a_surrogate_pair_is_fine(api):
    raw = b'{"attributes": {"name": "Jo \\ud83d\\ude00"}}'
    response = send(api, "PUT", url("jane"), raw)
    assert response.status_code == 201
    assert api.get(url("jane")).json()["attributes"]["name"] == "Jo \N{GRINNING FACE}"


def test_a_patch_of_an_unknown_user_is_refused_and_creates_nobody(api, jane):
    before = stored()
    error = assert_refused(
        api.patch(url("nobody"), {"attributes": {"name": "Nobody"}}, format="json"), 404, "id"
    )
    assert "PUT" in error  # it says how to create the user
    assert stored() == before
    assert_refused(api.get(url("nobody")), 404, "id")
    assert_refused(api.get(url("nobody", events=True)), 404, "id")
    assert_refused(api.delete(url("nobody")), 404, "id")
    assert stored() == before


ODD_REQUESTS = [
    # (method, path, body, content type)
    ("GET", "/api/users/%00", None, JSON),
    ("PUT", "/api/users/%00", {"attributes": {}}, JSON),
    ("PUT", "/api/users/a%0Ab", {"attributes": {}}, JSON),
    ("PUT", "/api/users/%ED%A0%80", {"attributes": {}}, JSON),
    ("PUT", "/api/users/%FF", {"attributes": {}}, JSON),
    ("PUT", url("..%2F..%2Fetc"), {"attributes": {}}, JSON),
    ("PUT", url("\N{PILE OF POO}" * 255), {"attributes": {}}, JSON),
    ("GET", url("x" * 10_000), None, JSON),
    ("DELETE", url("x" * 10_000), None, JSON),
    ("GET", "/api/users/odd/events?page=abc", None, JSON),
    ("GET", "/api/users/odd/events?page=0", None, JSON),
    ("GET", "/api/users/odd/events?page=-1", None, JSON),
    ("GET", "/api/users/odd/events?page=99999999999999999999999", None, JSON),
    ("GET", "/api/users/odd/events?page_size=abc", None, JSON),
    ("GET", "/api/users/odd/events?page_size=-5", None, JSON),
    ("GET", "/api/users/odd/events?page_size=0", None, JSON),
    ("POST", "/api/users/odd", {"attributes": {}}, JSON),
    ("PUT", "/api/users/odd/events", {"name": "x"}, JSON),
    ("PUT", "/api/users/odd", {"attributes": {"": 1, " ": None, "\u0000": "\u0000"}}, JSON),
    ("PUT", "/api/users/odd", {"attributes": {"big": 10**300, "tiny": 1e-300, "neg": -0.0}}, JSON),
    ("PUT", "/api/users/odd", b'{"attributes": {"n": 1' + b"0" * 5000 + b"}}", JSON),
    ("PUT", "/api/users/odd", b'{"attributes": {"n": 1e-400}}', JSON),
    ("PUT", "/api/users/odd", b'{"attributes": {"n": 1e400}}', JSON),
    ("PUT", "/api/users/odd", b'{"attributes": {"s": "\\ud800"}}', JSON),
    ("POST", "/api/users/odd/events", b'{"name": "\\udc00"}', JSON),
    ("PUT", "/api/users/odd", b'{"attributes": {"s": "' + b"x" * 3_000_000 + b'"}}', JSON),
    ("PUT", "/api/users/odd", b'{"attributes": {"a": 1, "a": 2}}', JSON),
    ("PUT", "/api/users/odd", {"attributes": {f"k{n}": n for n in range(5000)}}, JSON),
    ("PUT", "/api/users/odd", {"attributes": {"list": list(range(20_000))}}, JSON),
    ("PUT", "/api/users/odd", {"attributes": {"s": "'; DROP TABLE users; --"}}, JSON),
    ("PUT", "/api/users/odd", {"attributes": {"html": "<script>alert(1)</script>"}}, JSON),
    ("PUT", "/api/users/odd", b'{"attributes": {}}', "application/json; charset=utf-16"),
    ("PUT", "/api/users/odd", b'{"attributes": {}}', "application/json; charset=bogus"),
    (
        "PUT",
        "/api/users/odd",
        '{"attributes": {"a": 1}}'.encode("utf-16"),
        "application/json; charset=utf-16",
    ),
    ("PUT", "/api/users/odd", b'\xef\xbb\xbf{"attributes": {}}', JSON),
    ("PUT", "/api/users/odd", b"\x00\x00\x00", JSON),
    ("PUT", "/api/users/odd", b"   ", JSON),
    ("PUT", "/api/users/odd", b'"\\u0000"', JSON),
    ("PUT", "/api/users/odd", {"attributes": {}}, "application/vnd.api+json"),
    ("PUT", "/api/users/odd", {"attributes": {}}, ""),
    ("PUT", "/api/users/odd", {"attributes": {}}, "application/json; charset"),
    ("PATCH", "/api/users/odd", {"attributes": {"a": {"b": None}}}, JSON),
    ("PATCH", "/api/users/odd", {"attributes": nested(16)}, JSON),
    ("POST", "/api/users/odd/events", {"name": "\N{PILE OF POO}" * 255}, JSON),
    ("POST", "/api/users/odd/events", {"name": "x", "attributes": {"at": "not a date"}}, JSON),
    ("POST", "/api/users/odd/events", {"name": "purchase", "attributes": {"amount": "lots"}}, JSON),
    ("POST", "/api/users/odd/events", {"name": "purchase", "attributes": {"amount": 10**30}}, JSON),
    ("POST", "/api/users/odd/events", {"name": "x\u007f"}, JSON),
    ("POST", "/api/users/odd/events", {"name": "x\u2028y"}, JSON),
    ("OPTIONS", "/api/users/odd", None, JSON),
    ("HEAD", "/api/users/odd", None, JSON),
    ("TRACE", "/api/users/odd", None, JSON),
    ("POST", "/api/health", {"a": 1}, JSON),
    ("DELETE", "/api/users/odd/events", None, JSON),
    ("DELETE", "/api/users/odd", None, JSON),
]


@pytest.mark.django_db(transaction=True)
def test_no_request_makes_the_server_fail(api, clock, pushed):
    pushed()  # with segments and campaigns, so every accepted write is evaluated too
    api.raise_request_exception = False
    failures = []
    for method, path, body, content_type in ODD_REQUESTS:
        response = send(api, method, path, body if body is not None else b"", content_type)
        if response.status_code >= 500 or (
            method != "HEAD" and response.content and response["Content-Type"] != JSON
        ):
            failures.append((method, path[:60], response.status_code, response.content[:200]))
    assert failures == []
    # Every accepted write went through the pipeline: the odd user is readable, with segments.
    clock.advance_and_tick(hours=1)
    assert api.get(url("\N{PILE OF POO}" * 255)).status_code == 200


# -- Values from requests are data, never SQL -----------------------------------------------------

SNEAKY_IDS = ["x' OR '1'='1", "robert'); DROP TABLE users;--"]


@pytest.mark.django_db(transaction=True)
def test_quotes_in_ids_names_and_attributes_are_just_text(api, clock, pushed):
    pushed()
    api.put(
        url("jane"),
        {
            "attributes": {
                "email": "jane@example.com",
                "name": "Jane",
                "lastLoginAt": clock.now.isoformat(),
            }
        },
        format="json",
    )
    for n, user_id in enumerate(SNEAKY_IDS):
        response = api.put(
            url(user_id),
            {
                "attributes": {
                    "email": f"sneaky{n}@example.com",
                    "name": user_id,
                    "lastLoginAt": "9999' OR '1'='1",
                    "note": "'; DELETE FROM events;--",
                }
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        assert response.json()["id"] == user_id
        for amount in (600, 500):
            event = api.post(
                url(user_id, events=True),
                {"name": "purchase", "attributes": {"amount": amount, "orderId": "1' OR 1=1 --"}},
                format="json",
            )
            assert event.status_code == 201, event.content
        api.post(url(user_id, events=True), {"name": "x' OR name LIKE '%"}, format="json")

    clock.advance_and_tick(minutes=5)
    assert User.objects.count() == 3
    assert Event.objects.count() == 6
    for n, user_id in enumerate(SNEAKY_IDS):
        body = api.get(url(user_id)).json()
        assert body["id"] == user_id
        assert body["attributes"]["note"] == "'; DELETE FROM events;--"
        # Their purchases add up to 1100: big spenders. The odd lastLoginAt is a later text
        # than any real date, so they are not inactive.
        assert body["segments"] == ["big-spenders", "new-users"]
        assert [c["campaign"] for c in body["campaigns"]] == ["onboarding"]
        events = api.get(url(user_id, events=True)).json()
        assert [e["name"] for e in events["results"]] == [
            "x' OR name LIKE '%",
            "purchase",
            "purchase",
        ]
        assert sent(user_id, campaign_name="onboarding") == ["welcome"]
        confirmations = OutboxEmail.objects.filter(
            user_id=user_id, transaction_name="purchase-confirmation"
        )
        assert confirmations.count() == 2
        assert {row.to_address for row in confirmations} == {f"sneaky{n}@example.com"}

    # Jane is untouched by all of it.
    jane = api.get(url("jane")).json()
    assert jane["segments"] == ["new-users"]
    assert Event.objects.filter(user_id="jane").count() == 0
    assert sent("jane") == ["welcome"]

    # Deleting one removes only that one.
    assert api.delete(url(SNEAKY_IDS[0])).status_code == 204
    assert sorted(User.objects.values_list("id", flat=True)) == sorted(["jane", SNEAKY_IDS[1]])
    assert Event.objects.filter(user_id=SNEAKY_IDS[1]).count() == 3


@pytest.mark.parametrize(
    "method, path",
    [("POST", "/api/users/jane"), ("PUT", "/api/users/jane/events"), ("DELETE", "/api/health")],
)
def test_a_method_an_endpoint_does_not_take_is_refused_with_405(api, jane, method, path):
    before = stored()
    error = assert_refused(send(api, method, path, {}), 405, "method")
    assert method in error
    assert stored() == before


@pytest.mark.parametrize(
    "query, field",
    [
        ("page=abc", "page"),
        ("page=0", "page"),
        ("page=9", "page"),
        ("page_size=-1", "page_size"),
        # Digits to Python's str.isdigit, but no number int() reads: they were a 500.
        ("page=%C2%B2", "page"),  # ²
        ("page_size=%E2%91%A0", "page_size"),  # ①
        ("page_size=%D9%A3", "page_size"),  # Arabic-Indic 3: int() reads it, the API does not
    ],
)
def test_a_page_that_is_not_there_is_a_400_naming_the_parameter(api, jane, query, field):
    response = api.get(url("jane", events=True) + "?" + query)
    assert_refused(response, 400, field)


@pytest.mark.parametrize(
    "path", ["/api/nope", "/api/users/jane/", "/api/users/a%2Fb", "/api/users/jane/events/x"]
)
def test_a_path_that_is_no_endpoint_is_a_json_404(api, path):
    response = api.get(path)
    error = assert_refused(response, 404, "path")
    assert "cannot contain '/'" in error


def test_the_api_root_lists_the_endpoints(api):
    response = api.get("/api/")
    assert response.status_code == 200
    endpoints = response.json()["endpoints"]
    assert "GET, PUT, PATCH, DELETE /api/users/{id}" in endpoints
    assert "POST /api/events" in endpoints


def test_the_api_root_needs_a_key(client):
    response = client.get("/api/")
    assert response.status_code == 401 and "error" in response.json()


@pytest.mark.parametrize("path", ["/api/users", "/api/nothing-here"])
def test_a_path_without_an_endpoint_lists_the_endpoints(api, path):
    response = api.get(path)
    assert response.status_code in (400, 404)
    assert "/api/users/{id}/events" in response.json()["error"]
