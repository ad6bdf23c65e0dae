"""The ingest hot path does only the work a request needs: no session, CSRF or staff-user work
under /api/ and /v1/, and a single event stored in as few statements as its guarantees allow,
without switching autocommit. What it stores is what the locked way stores, for any sequence."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import User as StaffAccount
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from segflow import dispatch
from segflow import users as user_service
from segflow.api_keys import create_api_key
from segflow.models import Event, User
from segflow.users import NewEvent, store_event, store_events

from .test_api import send, url

# -- Middleware: the admin's work stays in the admin ---------------------------------------------


@pytest.fixture
def staff_client(db) -> Client:
    """A browser logged in to the admin, with its session and CSRF cookies."""
    StaffAccount.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client(enforce_csrf_checks=True)
    client.login(username="admin", password="pw")
    client.get("/admin/")  # a page with a form: sets the CSRF cookie
    return client


def session_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "django_session" in q["sql"] or "auth_user" in q["sql"]]


@pytest.mark.parametrize("path", ["/api/users/jane", "/v1/identify"])
def test_an_api_call_with_the_admins_cookies_does_no_session_work(staff_client, path):
    _, key = create_api_key("app")
    staff_client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    body = {"attributes": {}} if path.startswith("/api/") else {"userId": "jane", "traits": {}}
    method = "PUT" if path.startswith("/api/") else "POST"
    assert staff_client.cookies.get("sessionid") and staff_client.cookies.get("csrftoken")
    with CaptureQueriesContext(connection) as queries:
        response = send(staff_client, method, path, body)
    assert response.status_code in (200, 201), response.content
    assert session_queries(queries.captured_queries) == []
    assert not response.cookies  # no session or CSRF cookie set or refreshed
    assert "Cookie" not in response.get("Vary", "")


def test_the_admin_keeps_its_session_and_csrf_protection(staff_client):
    assert staff_client.get("/admin/").status_code == 200  # logged in: the session works
    # A form posted without the CSRF token (a forged request) is refused.
    response = staff_client.post("/admin/segflow/apikey/", {"action": "revoke"})
    assert response.status_code == 403
    assert Client().get("/admin/").status_code == 302  # no session: to the login page


# -- A single event: the statements it takes ----------------------------------------------------


@pytest.fixture
def handed_out(monkeypatch) -> list:
    """What the writes hand out, kept here instead of handed to the broker (or run in process)."""
    kept: list = []
    monkeypatch.setattr(dispatch, "_hand_out", lambda name, args: kept.append((name, *args)))
    return kept


@pytest.fixture
def keyed(transactional_db, handed_out) -> APIClient:
    _, key = create_api_key("app")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/users/nobody").status_code == 404  # the key is read, and kept
    return client


def statements_of(client, user_id: str, body: dict, switches: int = 0) -> tuple[list[str], object]:
    """The statements a POST of an event sends (their first words), having checked that
    autocommit was switched `switches` times."""
    autocommit_switches = []
    original = connection.set_autocommit

    def spy(*args, **kwargs):
        autocommit_switches.append(args)
        return original(*args, **kwargs)

    connection.set_autocommit = spy
    try:
        with CaptureQueriesContext(connection) as queries:
            response = send(client, "POST", url(user_id, events=True), body)
    finally:
        del connection.set_autocommit
    assert len(autocommit_switches) == switches
    return [q["sql"].split(" (")[0].split(" `")[0].split(' "')[0] for q in queries], response


def test_an_event_with_a_message_id_is_one_plain_transaction_of_two_statements(keyed, handed_out):
    User.objects.create(id="ann", attributes={})
    sql, response = statements_of(keyed, "ann", {"name": "purchase", "message_id": "m-1"})
    assert response.status_code == 201
    begin = "BEGIN IMMEDIATE" if connection.vendor == "sqlite" else "START TRANSACTION"
    assert sql == [begin, "INSERT INTO", "INSERT INTO", "COMMIT"]
    event = Event.objects.get()
    assert event.message_id == "m-1"
    assert handed_out == [("process_events", [event.pk])]  # after the commit, as before


def test_an_event_for_a_new_user_creates_them_in_the_same_statements(keyed):
    sql, response = statements_of(keyed, "bob", {"name": "signup", "message_id": "m-1"})
    assert response.status_code == 201
    assert len(sql) == 4
    bob = User.objects.get(id="bob")
    assert bob.attributes == {} and bob.evaluation_pending
    assert Event.objects.get().user_id == "bob"


def test_an_event_without_a_message_id_is_one_statement(keyed):
    User.objects.create(id="ann", attributes={})
    sql, response = statements_of(keyed, "ann", {"name": "purchase"})
    assert response.status_code == 201
    assert sql == ["INSERT INTO"]
    # For an unknown user it falls back to locking (and creating) them first.
    _, response = statements_of(keyed, "carl", {"name": "purchase"}, switches=2)
    assert response.status_code == 201
    assert User.objects.filter(id="carl").count() == 1
    assert Event.objects.filter(user_id="carl").count() == 1


def test_a_repeated_message_id_is_answered_with_the_stored_event(keyed):
    first = send(keyed, "POST", url("ann", events=True), {"name": "a", "message_id": "m-1"})
    again = send(keyed, "POST", url("bob", events=True), {"name": "b", "message_id": "m-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "duplicate": True}
    # The rolled-back transaction created no user for the duplicate.
    assert list(User.objects.values_list("id", flat=True)) == ["ann"]


def test_the_segment_track_call_takes_the_same_path(keyed):
    _, key = create_api_key("segment")
    v1 = APIClient(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{key}:".encode()).decode())
    body = {"userId": "ann", "event": "purchase", "messageId": "s-1"}
    assert send(v1, "POST", "/v1/identify", {"userId": "ann", "traits": {}}).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert send(v1, "POST", "/v1/track", body).json() == {"success": True}
    assert len(queries) == 4  # the key is kept since identify
    assert send(v1, "POST", "/v1/track", body).json() == {"success": True}
    assert list(Event.objects.values_list("user_id", "message_id")) == [("ann", "s-1")]


# -- User writes: no lock, no transaction, no read before a PUT -------------------------------


@pytest.fixture
def rung(keyed, settings, monkeypatch) -> list[str]:
    """Production mode: the queues the writes ring the doorbell of, instead of the broker."""
    settings.SEGFLOW_TASKS_INLINE = False
    queues: list[str] = []
    doorbell = SimpleNamespace(ring=queues.append, answered=lambda queue: None)
    monkeypatch.setattr(dispatch, "_doorbell", lambda: doorbell)
    return queues


def first_words(queries) -> list[str]:
    return [q["sql"].split(" `")[0].split(' "')[0].split(" ")[0] for q in queries]


def test_a_new_user_is_stored_in_one_insert_and_answered_without_reading_back(keyed, rung):
    with CaptureQueriesContext(connection) as queries:
        response = send(keyed, "PUT", url("ann"), {"attributes": {"plan": "pro"}})
    assert response.status_code == 201, response.content
    # MySQL and MariaDB: one INSERT ... ON DUPLICATE KEY UPDATE creates ann. Elsewhere the
    # UPDATE finds nobody and the INSERT creates ann, each committed on its own.
    expected = ["INSERT"] if connection.vendor == "mysql" else ["UPDATE", "INSERT"]
    assert first_words(queries) == expected
    body = response.json()
    assert (body["attributes"], body["segments"], body["campaigns"]) == ({"plan": "pro"}, [], [])
    ann = User.objects.get(id="ann")
    assert (ann.attributes, ann.version, ann.evaluation_pending) == ({"plan": "pro"}, 1, True)
    assert rung == ["users"]


def test_a_put_of_a_known_user_replaces_their_attributes_in_one_update(keyed, rung):
    send(keyed, "PUT", url("ann"), {"attributes": {"plan": "pro", "age": 3}})
    created = User.objects.get(id="ann")
    User.objects.filter(id="ann").update(evaluation_pending=False)
    with CaptureQueriesContext(connection) as queries:
        response = send(keyed, "PUT", url("ann"), {"attributes": {"plan": "free"}})
    assert response.status_code == 200
    # One write (the same upsert on MySQL and MariaDB, finding ann), then the answer's read.
    write = "INSERT" if connection.vendor == "mysql" else "UPDATE"
    assert first_words(queries)[:2] == [write, "SELECT"]
    assert first_words(queries).count(write) == 1
    ann = User.objects.get(id="ann")
    assert (ann.attributes, ann.version, ann.evaluation_pending) == ({"plan": "free"}, 2, True)
    assert ann.created_at == created.created_at
    assert response.json()["created_at"] == keyed.get(url("ann")).json()["created_at"]
    assert rung == ["users", "users"]


def test_a_patch_keeps_a_write_that_came_in_between_its_read_and_its_write(
    keyed, rung, monkeypatch
):
    """PATCH reads, merges and writes only if the user's version is unchanged; another write in
    between makes it read again, so both writes are kept."""
    send(keyed, "PUT", url("ann"), {"attributes": {"a": 1}})
    original = user_service.merge_patch
    calls = []

    def merge_with_a_write_in_between(target, patch):
        if patch == {"c": 3}:  # the whole patch, not one of its values (merged recursively)
            calls.append(target)
            if len(calls) == 1:  # another request writes after this one read
                user_service.put_user("ann", {**target, "b": 2})
        return original(target, patch)

    monkeypatch.setattr(user_service, "merge_patch", merge_with_a_write_in_between)
    response = send(keyed, "PATCH", url("ann"), {"attributes": {"c": 3}})
    assert response.status_code == 200
    assert response.json()["attributes"] == {"a": 1, "b": 2, "c": 3}
    ann = User.objects.get(id="ann")
    assert ann.attributes == {"a": 1, "b": 2, "c": 3}
    assert ann.version == 3  # the PUT, the write in between, the PATCH
    assert calls == [{"a": 1}, {"a": 1, "b": 2}]


def test_a_patch_of_an_unknown_user_changes_nothing(keyed, rung):
    response = send(keyed, "PATCH", url("nobody"), {"attributes": {"c": 3}})
    assert response.status_code == 404
    assert not User.objects.exists() and rung == []


# -- For any sequence: what is stored is what the guarantees say --------------------------------

writes = st.lists(
    st.one_of(
        st.tuples(
            st.just("one"),
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from([None, "m1", "m2", "m3"]),
        ),
        st.tuples(
            st.just("batch"),
            st.lists(
                st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from([None, "m1", "m4"])),
                min_size=1,
                max_size=4,
            ),
            st.none(),
        ),
    ),
    min_size=1,
    max_size=8,
)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=writes)
def test_for_any_sequence_of_single_events_and_batches_each_message_is_stored_once(
    handed_out, writes
):
    Event.objects.all().delete()
    User.objects.all().delete()
    first: dict[str, tuple[str, int]] = {}  # message id -> (user, position) of its first event
    expected_events = 0
    position = 0
    for kind, a, b in writes:
        news = [NewEvent(a, "e", {"n": position}, message_id=b)] if kind == "one" else []
        if kind == "batch":
            news = [
                NewEvent(u, "e", {"n": position + k}, message_id=m) for k, (u, m) in enumerate(a)
            ]
        answers = [store_event(news[0])] if kind == "one" else store_events(news)
        for new, answer in zip(news, answers, strict=True):
            if new.message_id is None or new.message_id not in first:
                expected_events += 1
                assert not answer.duplicate
                if new.message_id is not None:
                    first[new.message_id] = (new.user_id, new.attributes["n"])
            else:
                assert answer.duplicate
                user_id, n = first[new.message_id]
                assert (answer.event.user_id, answer.event.attributes["n"]) == (user_id, n)
            position += 1
    assert Event.objects.count() == expected_events
    stored = {e.message_id: (e.user_id, e.attributes["n"]) for e in Event.objects.all()}
    assert {m: v for m, v in stored.items() if m is not None} == first
    # Each user is stored once, and each stored event's user with it.
    users = list(User.objects.values_list("id", flat=True))
    assert len(users) == len(set(users))
    assert set(Event.objects.values_list("user_id", flat=True)) <= set(users)
