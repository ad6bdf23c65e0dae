"""segflow.client against a real HTTP server: pytest-django's live_server, or a bare socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from segflow.api_keys import create_api_key
from segflow.client import (
    Client,
    SegflowAuthError,
    SegflowConnectionError,
    SegflowError,
    SegflowNotFound,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def key() -> str:
    _, key = create_api_key("test")
    return key


@pytest.fixture
def client(live_server, key) -> Client:
    return Client(url=live_server.url, api_key=key, timeout=10.0)


class SocketServer:
    """A TCP server on 127.0.0.1 that keeps every request it reads and answers with `reply`,
    or never answers when `reply` is None; a list of replies is answered in turn, the last one
    again and again."""

    def __init__(self, reply: bytes | list[bytes] | None = None) -> None:
        self.replies = list(reply) if isinstance(reply, list) else None
        self.reply = self.replies.pop(0) if self.replies else reply
        self.requests: list[bytes] = []
        self._connections: list[socket.socket] = []
        self._stopping = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            if self._stopping:
                connection.close()
                return
            self._connections.append(connection)
            if self.reply is not None:
                self.requests.append(_read_request(connection))
                connection.sendall(self.reply)
                connection.close()
                if self.replies:
                    self.reply = self.replies.pop(0)

    def close(self) -> None:
        self._stopping = True
        # Closing the listener does not wake a thread blocked in accept(): connect to wake it.
        socket.create_connection(self._listener.getsockname(), timeout=5).close()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._connections:
            connection.close()


def _read_request(connection: socket.socket) -> bytes:
    connection.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def socket_server():
    servers: list[SocketServer] = []

    def start(reply: bytes | list[bytes] | None = None) -> SocketServer:
        servers.append(SocketServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def http_reply(status: str, body: bytes, content_type: str = "application/json", extra: str = ""):
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode() + body


def closed_port_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# Users


def test_create_update_get_delete_round_trip(client):
    last_login = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    created = client.create_user(
        "user123", {"email": "jane@example.com", "name": "Jane", "lastLoginAt": last_login}
    )
    assert created["id"] == "user123"
    assert created["attributes"] == {
        "email": "jane@example.com",
        "name": "Jane",
        "lastLoginAt": "2026-03-02T09:00:00+00:00",  # an aware datetime is sent as UTC ISO 8601
    }

    updated = client.update_user("user123", {"plan": "pro", "name": None})
    assert updated["attributes"] == {
        "email": "jane@example.com",
        "plan": "pro",
        "lastLoginAt": "2026-03-02T09:00:00+00:00",
    }
    assert client.get_user("user123")["attributes"] == updated["attributes"]

    replaced = client.create_user("user123", {"email": "jane@new.example.com"})
    assert replaced["attributes"] == {"email": "jane@new.example.com"}

    assert client.delete_user("user123") is None
    with pytest.raises(SegflowNotFound):
        client.get_user("user123")


def test_user_ids_with_url_characters_reach_the_right_user(client):
    user_id = "jane doe+1@example.com?x=1#frag%20ü"
    client.create_user(user_id, {"name": "Jane", "city": "Zürich"})
    user = client.get_user(user_id)
    assert user["id"] == user_id
    assert user["attributes"] == {"name": "Jane", "city": "Zürich"}
    client.emit(user_id, "login")
    assert client.list_events(user_id)["results"][0]["user_id"] == user_id
    client.delete_user(user_id)


def test_user_ids_the_server_cannot_route_are_refused_before_sending(client):
    for user_id in ("a/b", "", ".."):
        with pytest.raises(ValueError, match="user_id"):
            client.get_user(user_id)
    with pytest.raises(TypeError, match="user_id"):
        client.get_user(123)


def test_get_of_a_missing_user_raises_not_found(client):
    with pytest.raises(SegflowNotFound) as caught:
        client.get_user("nobody")
    assert caught.value.status == 404
    assert caught.value.message == "id: no user with id 'nobody'"
    assert (
        str(caught.value) == "GET /api/users/nobody failed with 404: id: no user with id 'nobody'"
    )


def test_update_and_delete_of_a_missing_user_raise_not_found(client):
    with pytest.raises(SegflowNotFound, match="create the user with PUT first"):
        client.update_user("nobody", {"plan": "pro"})
    with pytest.raises(SegflowNotFound):
        client.delete_user("nobody")


def test_bad_attributes_raise_a_400_naming_the_field(client):
    with pytest.raises(SegflowError) as caught:
        client.create_user("x", ["not", "a", "dict"])
    error = caught.value
    assert error.status == 400
    assert error.message == "attributes: must be a JSON object, got an array"
    assert (
        str(error)
        == "PUT /api/users/x failed with 400: attributes: must be a JSON object, got an array"
    )
    assert error.body["fields"] == {"attributes": ["must be a JSON object, got an array"]}
    assert not isinstance(error, (SegflowNotFound, SegflowAuthError, SegflowConnectionError))


def test_values_json_cannot_carry_are_refused_before_sending(client):
    with pytest.raises(ValueError):
        client.create_user("x", {"score": float("nan")})
    with pytest.raises(ValueError):
        client.emit("x", "login", {"score": float("inf")})
    with pytest.raises(ValueError):
        client.create_user("x", {"name": "\ud800"})  # a lone surrogate: not valid UTF-8
    with pytest.raises(TypeError, match="timezone"):
        client.create_user("x", {"lastLoginAt": datetime(2026, 3, 2, 9, 0)})
    with pytest.raises(SegflowNotFound):
        client.get_user("x")


# Events


def test_emit_many_records_a_batch_or_nothing(client):
    events = client.emit_many(
        [
            {"user_id": "a", "name": "login"},
            {"user_id": "b", "name": "purchase", "attributes": {"amount": 5}},
        ]
    )
    assert [(e["user_id"], e["name"], e["attributes"]) for e in events] == [
        ("a", "login", {}),
        ("b", "purchase", {"amount": 5}),
    ]
    with pytest.raises(SegflowError) as caught:
        client.emit_many([{"user_id": "c", "name": "login"}, {"user_id": "c", "name": ""}])
    assert caught.value.status == 400
    assert caught.value.message == "events[1].name: must not be empty"
    with pytest.raises(SegflowNotFound):
        client.get_user("c")


def test_emit_creates_the_user_and_returns_the_event(client):
    event = client.emit("user123", "purchase", {"orderId": "ord_123", "amount": 99.99})
    assert event["user_id"] == "user123"
    assert event["name"] == "purchase"
    assert event["attributes"] == {"orderId": "ord_123", "amount": 99.99}
    assert isinstance(event["id"], int)
    assert client.get_user("user123")["attributes"] == {}

    reset = client.emit(
        "user123", "reset_password_requested", {"resetLink": "https://example.com/reset/abc123"}
    )
    plain = client.emit("user123", "login")
    assert plain["attributes"] == {}

    page = client.list_events("user123")
    assert page["count"] == 3
    assert [e["id"] for e in page["results"]] == [plain["id"], reset["id"], event["id"]]


def test_list_events_pages(client):
    ids = [client.emit("u1", "login", {"n": n})["id"] for n in range(3)]
    first = client.list_events("u1", page=1, page_size=2)
    second = client.list_events("u1", page=2, page_size=2)
    assert first["count"] == 3
    assert [e["id"] for e in first["results"]] == ids[::-1][:2]
    assert [e["id"] for e in second["results"]] == ids[:1]
    assert first["next"] and second["next"] is None
    with pytest.raises(ValueError, match="page_size"):
        client.list_events("u1", page_size=0)
    with pytest.raises(SegflowNotFound):
        client.list_events("nobody")


def test_a_bad_event_name_raises_a_400_naming_the_field(client):
    with pytest.raises(SegflowError) as caught:
        client.emit("user123", "   ")
    assert caught.value.status == 400
    assert caught.value.message == "name: must not be empty"


# Keys


def test_a_bad_key_raises_an_auth_error(live_server, key):
    bad = Client(url=live_server.url, api_key="sf_not-a-real-key", timeout=10.0)
    with pytest.raises(SegflowAuthError) as caught:
        bad.get_user("user123")
    assert caught.value.status == 401
    assert caught.value.message == "Authorization: unknown or revoked API key"
    with pytest.raises(SegflowAuthError):
        bad.emit("user123", "login")


def test_a_revoked_key_raises_an_auth_error(live_server):
    row, key = create_api_key("soon revoked")
    client = Client(url=live_server.url, api_key=key)
    client.create_user("user123", {})
    row.revoked_at = timezone.now()
    row.save()
    with pytest.raises(SegflowAuthError):
        client.get_user("user123")


# Connections and timeouts


def test_a_server_that_never_answers_raises_a_connection_error_within_the_timeout(socket_server):
    server = socket_server(reply=None)
    client = Client(url=server.url, api_key="sf_whatever", timeout=0.5, retries=0)
    started = time.monotonic()
    with pytest.raises(SegflowConnectionError) as caught:
        client.get_user("user123")
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3
    assert caught.value.status is None
    assert "within 0.5 seconds" in str(caught.value)


def test_nothing_listening_raises_a_connection_error():
    client = Client(url=closed_port_url(), api_key="sf_whatever", timeout=2)
    with pytest.raises(SegflowConnectionError, match="could not reach"):
        client.emit("user123", "login")


def test_requests_carry_the_key_json_and_user_agent(socket_server):
    server = socket_server(reply=http_reply("201 Created", b'{"id": 1}'))
    client = Client(url=server.url + "/", api_key="sf_secret", timeout=5)
    assert client.emit("jane doe", "purchase", {"amount": 5, "city": "Zürich"}) == {"id": 1}
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0] == "POST /api/users/jane%20doe/events HTTP/1.1"
    assert headers["authorization"] == "Bearer sf_secret"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "segflow-python/0.2"
    sent = json.loads(body.decode("utf-8"))
    # Every event carries a message id, so a retry of it is stored once.
    assert len(sent.pop("message_id")) == 32
    assert sent == {"name": "purchase", "attributes": {"amount": 5, "city": "Zürich"}}
    assert "sf_secret" not in repr(client)


def test_an_answer_that_is_not_json_gives_a_readable_error(socket_server):
    server = socket_server(
        reply=http_reply("502 Bad Gateway", b"<h1>upstream down</h1>", "text/html")
    )
    client = Client(url=server.url, api_key="sf_whatever", timeout=5)
    with pytest.raises(SegflowError) as caught:
        client.get_user("jane")
    assert caught.value.status == 502
    assert str(caught.value) == (
        "GET /api/users/jane failed with 502: Bad Gateway ('<h1>upstream down</h1>')"
    )


def test_a_redirect_is_reported_not_followed(socket_server):
    server = socket_server(
        reply=http_reply(
            "301 Moved Permanently", b"", extra="Location: https://segflow.example.com/\r\n"
        )
    )
    client = Client(url=server.url, api_key="sf_secret", timeout=5)
    with pytest.raises(SegflowError, match="redirected to https://segflow.example.com/") as caught:
        client.create_user("jane", {})
    assert caught.value.status == 301
    assert len(server.requests) == 1


# Client.initialize


def test_initialize_checks_the_server_and_the_key(live_server, key):
    client = Client.initialize(url=live_server.url, api_key=key, timeout=5)
    assert client.create_user("user123", {"name": "Jane"})["id"] == "user123"


def test_initialize_leaves_no_warning_in_the_server_log(live_server, key, caplog):
    with caplog.at_level("WARNING"):
        Client.initialize(url=live_server.url, api_key=key, timeout=5)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


def test_initialize_with_a_wrong_url_says_no_server_answered():
    url = closed_port_url()
    with pytest.raises(SegflowConnectionError, match=f"no segflow server answered at {url}"):
        Client.initialize(url=url, api_key="sf_whatever", timeout=2)


def test_initialize_with_a_url_that_is_not_segflow_says_so(live_server, key):
    with pytest.raises(SegflowError, match="does not look like a segflow server") as caught:
        Client.initialize(url=live_server.url + "/elsewhere", api_key=key, timeout=5)
    assert caught.value.status == 404


def test_initialize_with_a_bad_key_raises_an_auth_error(live_server):
    with pytest.raises(SegflowAuthError, match="refused the API key"):
        Client.initialize(url=live_server.url, api_key="sf_not-a-real-key", timeout=5)


def test_bad_settings_are_refused_at_construction():
    with pytest.raises(ValueError, match="url"):
        Client(url="127.0.0.1:8000", api_key="sf_x")
    with pytest.raises(ValueError, match="api_key"):
        Client(url="http://127.0.0.1:8000", api_key="")
    with pytest.raises(ValueError, match="timeout"):
        Client(url="http://127.0.0.1:8000", api_key="sf_x", timeout=0)
