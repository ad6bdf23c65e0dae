"""The broker is down or hangs: writes that committed are answered as stored, their work waits
for the schedule, and cursors whose hand-off failed are not left claimed for a whole lease."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from celery import current_app
from django.db import OperationalError
from kombu.exceptions import OperationalError as BrokerError

from campaigns import runner
from campaigns.models import Cursor
from segflow.models import Event, User
from segflow.pipeline import (
    drain_events,
    drain_queues,
    drain_users,
    evaluate_user,
    run_due_cursors,
)

from .conftest import sent
from .deployment import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
def flow(ctx, rt):
    yield rt.send_email("hello")
    yield rt.wait(days=1)
    yield rt.send_email("again")

html = lambda user: "<p>hi</p>"
config = {
    "templates": {"hello": {"subject": "Hello", "html": html},
                  "again": {"subject": "Again", "html": html}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"c": {"segments": ["all"], "behavior": "static", "flow": flow}},
}
"""


class Broker:
    """Celery's `send_task`, replaced: refuses while `down`, else records what it was given."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, tuple]] = []

    def send_task(self, name, args=(), **options):
        if self.down:
            raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append((name, tuple(args)))

    def tasks(self, name: str) -> list[tuple]:
        return [args for task, args in self.sent if task == "segflow." + name]


@pytest.fixture
def broker(settings, monkeypatch) -> Broker:
    """Production mode (tasks go to a broker), with a broker the test controls."""
    settings.SEGFLOW_TASKS_INLINE = False
    broker = Broker()
    monkeypatch.setattr(current_app._get_current_object(), "send_task", broker.send_task)
    return broker


def test_writes_that_committed_are_answered_as_stored_while_the_broker_is_down(
    api, broker, clock, caplog
):
    broker.down = True
    api.raise_request_exception = False
    with caplog.at_level(logging.WARNING, logger="segflow.dispatch"):
        put = api.put("/api/users/jane", {"attributes": {"email": "j@x.io"}}, format="json")
        one = api.post("/api/users/jane/events", {"name": "purchase"}, format="json")
        many = api.post(
            "/api/events",
            {"events": [{"user_id": "sam", "name": "purchase"}, {"user_id": "jane", "name": "x"}]},
            format="json",
        )
        patch = api.patch("/api/users/jane", {"attributes": {"plan": "pro"}}, format="json")
    assert [put.status_code, one.status_code, many.status_code, patch.status_code] == [
        201,
        201,
        201,
        200,
    ], (put.content, one.content, many.content, patch.content)
    assert User.objects.count() == 2 and Event.objects.count() == 3
    assert "not handed to the broker" in caplog.text

    # Nothing was handed out. The events and the users wait in their queues (the database):
    # once the broker is back, the next tick hands out one drain of each.
    assert broker.sent == []
    assert Event.objects.filter(processed_at__isnull=True).count() == 3
    assert User.objects.filter(evaluation_pending=True).count() == 2
    broker.down = False
    drain_queues()
    assert sorted(name for name, _ in broker.sent) == [
        "segflow.drain_events",
        "segflow.drain_users",
    ]
    # What such a drain does on a worker: everything is processed.
    drain_events()
    drain_users()
    assert Event.objects.filter(processed_at__isnull=True).count() == 0
    assert User.objects.filter(evaluation_pending=True).count() == 0


def test_new_cursors_whose_hand_off_failed_are_released_for_the_next_tick(
    broker, clock, pushed, write_config
):
    pushed(write_config(CONFIG))
    User.objects.create(id="jane", attributes={"email": "jane@example.com"})
    broker.down = True
    evaluate_user("jane")  # a worker evaluates her; handing her new cursor out fails
    cursor = Cursor.objects.get(user_id="jane")
    assert cursor.claimed_until is None, "released, not claimed for a whole lease"

    # The broker is back: the very next tick hands the cursor out, well within the lease.
    broker.down = False
    clock.advance(seconds=1)
    assert run_due_cursors(clock.now) == 1
    assert broker.tasks("advance_cursors") == [([cursor.pk],)]


def test_due_cursors_whose_hand_off_failed_are_released_for_the_next_tick(
    broker, clock, pushed, write_config
):
    pushed(write_config(CONFIG))
    User.objects.create(id="jane", attributes={"email": "jane@example.com"})
    User.objects.create(id="sam", attributes={"email": "sam@example.com"})
    evaluate_user("jane")
    evaluate_user("sam")
    cursors = sorted(Cursor.objects.values_list("pk", flat=True))
    Cursor.objects.update(claimed_until=None)  # as if their first task had been lost, long ago

    broker.down = True
    clock.advance(seconds=1)
    run_due_cursors(clock.now)
    assert list(Cursor.objects.values_list("claimed_until", flat=True)) == [None, None]

    broker.down = False
    clock.advance(seconds=1)
    assert run_due_cursors(clock.now) == 2
    assert sorted(broker.tasks("advance_cursors")[-1][0]) == cursors


def test_embedded_cursors_whose_run_failed_are_released_too(
    clock, pushed, write_config, settings, monkeypatch
):
    """Without a broker, handing a cursor out is running it: if that fails, it is released."""
    settings.SEGFLOW_INLINE_TASKS_RAISE = False
    pushed(write_config(CONFIG))
    original, calls = runner.advance_cursors, []

    def fails_once(cursor_ids, config, now=None):
        calls.append(cursor_ids)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return original(cursor_ids, config, now)

    monkeypatch.setattr(runner, "advance_cursors", fails_once)
    User.objects.create(id="jane", attributes={"email": "jane@example.com"})
    evaluate_user("jane")
    assert sent("jane") == []
    assert Cursor.objects.get(user_id="jane").claimed_until is None
    clock.advance(seconds=1)
    run_due_cursors(clock.now)
    assert sent("jane") == ["hello"]


# -- A broker that hangs: the hand-off gives up quickly ------------------------------------------


class SilentServer:
    """A TCP server that accepts connections and never answers: a frozen broker."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self._stopping:
                return

    def close(self) -> None:
        # Stop the thread before closing the listener, or it may go on accepting the connections
        # of whatever socket reuses the descriptor. Closing does not wake accept(): connecting does.
        if not self._stopping:
            self._stopping = True
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
            self.thread.join(timeout=5)
        self.sock.close()
        for conn in self.held:
            conn.close()


HAND_OFF = """
import time, django
django.setup()
from segflow.dispatch import enqueue
started = time.monotonic()
handed = enqueue("evaluate_user", "jane")
print(handed, round(time.monotonic() - started, 1))
"""


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen broker", "stopped broker"])
def test_handing_work_to_a_broker_that_is_down_gives_up_within_its_timeout(frozen):
    server = SilentServer()
    if not frozen:
        server.close()  # nothing listens there any more: connection refused
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "segflow_project.test_settings",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{server.port}/0",
            "SEGFLOW_BROKER_TIMEOUT_SECONDS": "1",
        }
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", HAND_OFF],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    handed, seconds = done.stdout.split()
    assert handed == "False"
    assert float(seconds) < 5, done.stdout
    assert "not handed to the broker" in done.stderr
    assert elapsed < 30
