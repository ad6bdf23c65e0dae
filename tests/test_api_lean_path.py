"""The lean path for one event a request (segflow/api/lean.py) answers exactly as Django would,
and leaves everything else to Django.

Each request goes through the WSGI application the web server serves, with Django's application
behind it wrapped in a spy, so a test can tell which of the two answered; the same request sent to
Django's application alone gives the answer to compare with.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from django.core.wsgi import get_wsgi_application

from segflow.api.lean import LeanIngest
from segflow.api_keys import create_api_key, revoke_api_keys
from segflow.models import ApiKey, Event, User

pytestmark = pytest.mark.django_db(transaction=True)


class Spy:
    """Django's WSGI application, counting the requests that reach it."""

    def __init__(self) -> None:
        self.application = get_wsgi_application()
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.application(environ, start_response)


def send(application, path: str, body, key: str | None, **extra) -> tuple[str, dict, bytes]:
    """A POST as the WSGI server hands it over; returns the status line, headers and body."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": io.BytesIO(data),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if key is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    environ.update(extra)
    answer: list = []

    def start_response(status, headers, exc_info=None):
        answer.extend([status, dict(headers)])

    chunks = application(environ, start_response)
    try:
        content = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return answer[0], answer[1], content


@pytest.fixture
def key(settings) -> str:
    settings.ALLOWED_HOSTS = ["testserver"]
    return create_api_key("apps")[1]


@pytest.fixture
def spy() -> Spy:
    return Spy()


def without_identity(body: bytes) -> dict:
    """An answer's event, less what differs from one stored event to the next."""
    event = json.loads(body)
    for name in ("id", "created_at", "message_id", "user_id"):
        event.pop(name)
    return event


def test_an_event_is_answered_by_the_lean_path_as_django_answers_it(key, spy):
    lean = LeanIngest(spy)
    event = {"name": "purchase", "attributes": {"amount": 5}, "timestamp": "2026-03-01T09:30:00Z"}

    lean_status, lean_headers, lean_body = send(lean, "/api/users/ann/events", event, key)
    assert spy.calls == 0  # nobody but the lean path
    django_status, django_headers, django_body = send(spy, "/api/users/bob/events", event, key)

    assert lean_status == django_status == "201 Created"
    assert lean_headers == django_headers
    assert without_identity(lean_body) == without_identity(django_body)
    stored = Event.objects.get(user_id="ann")
    assert json.loads(lean_body)["id"] == stored.pk and stored.name == "purchase"
    assert stored.attributes == {"amount": 5}
    # Handed out after its commit, as the view does (the tests' settings process it at once).
    assert stored.processed_at is not None
    assert User.objects.filter(pk="ann").exists()  # an unknown user is created, as ever


def test_a_repeated_message_id_gets_the_stored_event_back_either_way(key, spy):
    lean = LeanIngest(spy)
    event = {"name": "signup", "message_id": "msg-1"}
    _, _, first = send(lean, "/api/users/ann/events", event, key)
    _, lean_headers, again_lean = send(lean, "/api/users/ann/events", event, key)
    _, django_headers, again_django = send(spy, "/api/users/ann/events", event, key)

    assert spy.calls == 1
    assert json.loads(first)["duplicate"] is False
    assert (
        json.loads(again_lean)
        == json.loads(again_django)
        == {
            **json.loads(first),
            "duplicate": True,
        }
    )
    assert lean_headers == django_headers
    assert Event.objects.filter(message_id="msg-1").count() == 1


UNUSUAL = {
    "malformed JSON": ("/api/users/ann/events", b'{"name": ', {}),
    "an unknown field": ("/api/users/ann/events", {"name": "x", "nme": "y"}, {}),
    "no name": ("/api/users/ann/events", {"attributes": {}}, {}),
    "a name that is not a string": ("/api/users/ann/events", {"name": 5}, {}),
    "a body that is not an object": ("/api/users/ann/events", ["name"], {}),
    "a query string": ("/api/users/ann/events", {"name": "x"}, {"QUERY_STRING": "format=api"}),
    "HTML wanted": ("/api/users/ann/events", {"name": "x"}, {"HTTP_ACCEPT": "text/html"}),
    "not JSON": ("/api/users/ann/events", {"name": "x"}, {"CONTENT_TYPE": "text/plain"}),
    "a host not allowed": ("/api/users/ann/events", {"name": "x"}, {"HTTP_HOST": "evil.test"}),
    "a non-ASCII user id": ("/api/users/zoë/events", {"name": "x"}, {}),
    "a body over the limit": ("/api/users/ann/events", {"name": "x" * 300_000}, {}),
    "an id too long": ("/api/users/" + "a" * 300 + "/events", {"name": "x"}, {}),
    "a PUT without attributes": ("/api/users/ann", {"attrs": {}}, {"REQUEST_METHOD": "PUT"}),
    "a PUT of two addresses": (
        "/api/users/ann",
        {"attributes": {"email": "a@x.io, b@x.io"}},
        {"REQUEST_METHOD": "PUT"},
    ),
    "a PATCH of nobody": ("/api/users/nobody", {"attributes": {}}, {"REQUEST_METHOD": "PATCH"}),
    "a PATCH that is not JSON": (
        "/api/users/ann",
        b"attributes=1",
        {"REQUEST_METHOD": "PATCH", "CONTENT_TYPE": "application/x-www-form-urlencoded"},
    ),
}


@pytest.mark.parametrize("case", UNUSUAL)
def test_anything_unusual_goes_to_django_and_gets_djangos_answer(key, spy, settings, case):
    path, body, extra = UNUSUAL[case]
    lean = LeanIngest(spy)
    through_lean = send(lean, path, body, key, **extra)
    assert spy.calls == 1
    # The same request again, to Django alone: the same status and (but for ids) body.
    Event.objects.all().delete()
    User.objects.all().delete()
    alone = send(spy, path, body, key, **extra)
    assert through_lean[0] == alone[0]
    if through_lean[0].startswith("4"):
        assert through_lean[1:] == alone[1:]
        assert not Event.objects.exists()


def test_keys_that_may_not_ingest_are_refused_by_django(spy, settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    lean = LeanIngest(spy)
    body = {"name": "x"}
    assert send(lean, "/api/users/ann/events", body, None)[0].startswith("401")
    assert send(lean, "/api/users/ann/events", body, "sf_nope")[0].startswith("401")
    _, push_key = create_api_key("ci", scope="push")
    assert send(lean, "/api/users/ann/events", body, push_key)[0].startswith("403")
    assert spy.calls == 3
    assert not Event.objects.exists()


def test_a_revoked_key_stops_at_once_in_this_process(key, spy):
    lean = LeanIngest(spy)
    assert send(lean, "/api/users/ann/events", {"name": "x"}, key)[0].startswith("201")
    revoke_api_keys(ApiKey.objects.all())
    status, _, content = send(lean, "/api/users/ann/events", {"name": "y"}, key)
    assert status.startswith("401") and b"revoked" in content
    assert list(Event.objects.values_list("name", flat=True)) == ["x"]


def test_other_endpoints_and_methods_are_djangos(key, spy):
    lean = LeanIngest(spy)
    send(lean, "/v1/batch", {"batch": [{"type": "track", "userId": "a", "event": "x"}]}, key)
    send(lean, "/api/users/ann", b"", key, REQUEST_METHOD="DELETE")
    send(lean, "/api/users/ann/events", b"", key, REQUEST_METHOD="GET")
    send(lean, "/api/events", b"", key, REQUEST_METHOD="GET")
    assert spy.calls == 4


def test_a_batch_is_answered_by_the_lean_path_as_django_answers_it(key, spy):
    lean = LeanIngest(spy)
    when = "2026-03-01T09:30:00Z"
    batch = lambda who: {  # noqa: E731
        "events": [
            {"user_id": who, "name": "signup", "message_id": f"{who}-1", "timestamp": when},
            {"user_id": f"{who}-2", "name": "buy", "attributes": {"n": 5}, "timestamp": when},
            {"user_id": who, "name": "signup", "message_id": f"{who}-1"},  # a repeat
        ]
    }
    by_lean = send(lean, "/api/events", batch("ann"), key)
    again_by_lean = send(lean, "/api/events", {"events": batch("ann")["events"][:1]}, key)
    assert spy.calls == 0
    by_django = send(spy, "/api/events", batch("bob"), key)
    again_by_django = send(spy, "/api/events", {"events": batch("bob")["events"][:1]}, key)

    assert by_lean[0] == by_django[0] == "201 Created"
    assert again_by_lean[0] == again_by_django[0] == "200 OK"  # nothing new stored
    for lean_answer, django_answer in ((by_lean, by_django), (again_by_lean, again_by_django)):
        # (ids and arrival times differ in length from one stored event to the next)
        lean_headers, django_headers = dict(lean_answer[1]), dict(django_answer[1])
        assert lean_headers.pop("Content-Length") == str(len(lean_answer[2]))
        assert django_headers.pop("Content-Length") == str(len(django_answer[2]))
        assert lean_headers == django_headers
        lean_events = [
            without_identity(json.dumps(e)) for e in json.loads(lean_answer[2])["events"]
        ]
        django_events = [
            without_identity(json.dumps(e)) for e in json.loads(django_answer[2])["events"]
        ]
        assert lean_events == django_events
    assert [e["duplicate"] for e in json.loads(by_lean[2])["events"]] == [False, False, True]
    assert Event.objects.filter(user_id__in=["ann", "ann-2"]).count() == 2
    # Bad input in a batch is Django's to answer, and nothing of the batch is stored.
    status, _, content = send(lean, "/api/events", {"events": [{"user_id": "cy"}]}, key)
    assert status.startswith("400") and b"events[0].name" in content
    assert spy.calls == 3 and not Event.objects.filter(user_id="cy").exists()


def without_times(body: bytes) -> dict:
    user = json.loads(body)
    for name in ("id", "created_at", "updated_at"):
        user.pop(name)
    return user


def test_user_writes_are_answered_by_the_lean_path_as_django_answers_them(key, spy):
    lean = LeanIngest(spy)
    attributes = {"email": "ann@x.io", "plan": "free", "nested": {"a": [1, 2.5, None]}}
    new = {"attributes": attributes}

    created = send(lean, "/api/users/ann", new, key, REQUEST_METHOD="PUT")
    replaced = send(lean, "/api/users/ann", new, key, REQUEST_METHOD="PUT")
    patched = send(
        lean, "/api/users/ann", {"attributes": {"plan": "pro"}}, key, REQUEST_METHOD="PATCH"
    )
    assert spy.calls == 0
    by_django = [
        send(spy, "/api/users/bob", new, key, REQUEST_METHOD="PUT"),
        send(spy, "/api/users/bob", new, key, REQUEST_METHOD="PUT"),
        send(spy, "/api/users/bob", {"attributes": {"plan": "pro"}}, key, REQUEST_METHOD="PATCH"),
    ]

    assert [a[0] for a in (created, replaced, patched)] == ["201 Created", "200 OK", "200 OK"]
    for lean_answer, django_answer in zip((created, replaced, patched), by_django, strict=True):
        assert lean_answer[0] == django_answer[0]
        assert lean_answer[1] == django_answer[1]
        assert without_times(lean_answer[2]) == without_times(django_answer[2])
    # Stored as Django stores them; the known user's answer lists their segments (the tests'
    # settings evaluate at once), as Django's does.
    assert User.objects.get(pk="ann").attributes == {**attributes, "plan": "pro"}
    assert json.loads(patched[2])["segments"] == json.loads(by_django[2][2])["segments"]
