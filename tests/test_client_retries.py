"""The client tries again after passing failures, and sends events from a background queue."""

from __future__ import annotations

import json
import threading
import time

import pytest

from segflow.client import Client, SegflowError

from .test_client import http_reply, socket_server  # noqa: F401 - the fixture

CREATED = http_reply("201 Created", b'{"id": 1}')


def bodies(server) -> list[dict]:
    return [json.loads(request.partition(b"\r\n\r\n")[2]) for request in server.requests]


def test_a_503_is_tried_again_with_the_same_message_id(socket_server):  # noqa: F811
    server = socket_server(
        reply=[
            http_reply("503 Service Unavailable", b'{"error": "down"}', extra="Retry-After: 0\r\n"),
            CREATED,
        ]
    )
    client = Client(url=server.url, api_key="sf_key", backoff=0.01)
    assert client.emit("jane", "purchase", {"amount": 5}) == {"id": 1}
    first, second = bodies(server)
    assert first == second and len(first["message_id"]) == 32


def test_retry_after_is_honoured(socket_server):  # noqa: F811
    server = socket_server(
        reply=[http_reply("429 Too Many Requests", b"{}", extra="Retry-After: 1\r\n"), CREATED]
    )
    client = Client(url=server.url, api_key="sf_key", backoff=0.01)
    started = time.monotonic()
    client.emit("jane", "login")
    assert time.monotonic() - started >= 1.0
    assert len(server.requests) == 2


def test_a_refused_request_is_not_tried_again(socket_server):  # noqa: F811
    server = socket_server(reply=http_reply("400 Bad Request", b'{"error": "name: bad"}'))
    client = Client(url=server.url, api_key="sf_key", backoff=0.01)
    with pytest.raises(SegflowError, match="name: bad"):
        client.emit("jane", "login")
    assert len(server.requests) == 1


def test_it_gives_up_after_its_retries(socket_server):  # noqa: F811
    server = socket_server(reply=http_reply("502 Bad Gateway", b"{}"))
    client = Client(url=server.url, api_key="sf_key", retries=2, backoff=0.01)
    with pytest.raises(SegflowError) as caught:
        client.emit("jane", "login")
    assert caught.value.status == 502 and len(server.requests) == 3


def test_emit_many_gives_each_event_a_message_id_and_keeps_given_ones(socket_server):  # noqa: F811
    server = socket_server(reply=http_reply("201 Created", b'{"events": []}'))
    client = Client(url=server.url, api_key="sf_key")
    client.emit_many(
        [{"user_id": "a", "name": "x"}, {"user_id": "b", "name": "y", "message_id": "mine"}]
    )
    sent = bodies(server)[0]["events"]
    assert sent[1]["message_id"] == "mine" and len(sent[0]["message_id"]) == 32


def test_the_background_queue_sends_in_batches_from_many_threads(socket_server):  # noqa: F811
    server = socket_server(reply=http_reply("201 Created", b'{"events": []}'))
    client = Client(url=server.url, api_key="sf_key", background=True, batch_size=50)
    started = time.monotonic()

    def emit_many_times(n: int) -> None:
        for i in range(25):
            assert isinstance(client.emit(f"user{n}", "page", {"i": i}), str)

    threads = [threading.Thread(target=emit_many_times, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 1.0  # emit returned at once
    assert client.flush(timeout=10)
    events = [event for body in bodies(server) for event in body["events"]]
    assert len(events) == 200 and len({e["message_id"] for e in events}) == 200
    assert all(len(body["events"]) <= 50 for body in bodies(server))
    assert len(server.requests) < 200  # batched, not one request per event
    client.close()


def test_the_background_queue_reports_what_it_could_not_send(socket_server):  # noqa: F811
    server = socket_server(reply=http_reply("400 Bad Request", b'{"error": "events[0].name: bad"}'))
    failures = []
    client = Client(
        url=server.url,
        api_key="sf_key",
        background=True,
        on_error=lambda error, events: failures.append((error.status, len(events))),
    )
    client.emit("jane", "login")
    assert client.flush(timeout=10)
    assert failures == [(400, 1)]
    client.close()


def test_the_background_queue_works_in_a_forked_child_and_flushes_at_exit(socket_server):  # noqa: F811
    import os

    server = socket_server(reply=http_reply("201 Created", b'{"events": []}'))
    client = Client(url=server.url, api_key="sf_key", background=True, flush_interval=5)
    client.emit("parent", "before-fork")
    pid = os.fork()
    if pid == 0:  # the child: its own queue and thread; exiting flushes what it queued
        try:
            client.emit("child", "in-child")
        finally:
            import atexit

            atexit._run_exitfuncs()
            os._exit(0)
    os.waitpid(pid, 0)
    assert client.flush(timeout=10)
    users = sorted(e["user_id"] for body in bodies(server) for e in body["events"])
    assert users == ["child", "parent"]  # each sent once, by its own process
    client.close()
