"""Batches of events share their users with one another on MariaDB: two batches for the same
users are written side by side, not one after the other; a deadlock that sharing makes possible
(the same message ids inserted in different orders) ends in a second try, not an error."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from segflow.db import share_user_ids
from segflow.models import Event, User
from segflow.pipeline import drain_events
from segflow.users import NewEvent, store_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.mysql_only]


class Other(threading.Thread):
    """A transaction of its own connection, run step by step by the test."""

    def __init__(self, steps) -> None:
        super().__init__(daemon=True)
        self.steps, self.error, self.done = steps, None, threading.Event()
        self.reached = [threading.Event() for _ in steps]
        self.go = [threading.Event() for _ in steps]

    def run(self) -> None:
        try:
            with transaction.atomic():
                for n, step in enumerate(self.steps):
                    assert self.go[n].wait(20), f"step {n} never let go"
                    step()
                    self.reached[n].set()
        except Exception as exc:  # surfaced by the test
            self.error = exc
        finally:
            connection.close()
            self.done.set()

    def step(self, n: int) -> None:
        self.go[n].set()
        assert self.reached[n].wait(20) or self.error, f"step {n} did not finish"

    def finish(self) -> None:
        """Let its remaining steps run, and wait for it to commit."""
        for go in self.go:
            go.set()
        self.join(30)


def run_in_thread(store) -> tuple[threading.Thread, dict]:
    """Run `store` on a connection of its own; its answer or error lands in the dict."""
    answer: dict = {}

    def run() -> None:
        try:
            answer["results"] = store()
        except Exception as exc:  # surfaced by the test
            answer["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answer


def results_of(other: Other, thread: threading.Thread, answer: dict) -> list:
    """The answer of `run_in_thread`'s `store` once it is done, neither it nor `other` failing."""
    thread.join(30)
    assert other.error is None, other.error
    assert "error" not in answer, answer["error"]
    return answer["results"]


def wait_for(condition, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def scalar(sql: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def test_a_batch_is_stored_while_another_batch_holds_the_same_users(pushed):
    pushed()
    for user_id in ("ann", "bob"):
        User.objects.create(id=user_id, attributes={"email": f"{user_id}@example.com"})
    other = Other([lambda: share_user_ids(["ann", "bob"]), lambda: None])
    other.start()
    try:
        other.step(0)  # it holds Ann and Bob as a batch does, and does not let go yet
        batcher, answer = run_in_thread(
            lambda: store_events(
                [NewEvent("ann", "login", {}), NewEvent("bob", "login", {}, message_id="m-1")]
            )
        )
        # The batch commits beside the other; only processing its events waits for it.
        wait_for(lambda: Event.objects.count() == 2, "the batch waited for the other batch")
        time.sleep(0.3)
        assert not Event.objects.filter(processed_at__isnull=False).exists()
    finally:
        other.finish()
    assert [r.duplicate for r in results_of(other, batcher, answer)] == [False, False]
    assert sorted(Event.objects.values_list("user_id", "message_id")) == [
        ("ann", None),
        ("bob", "m-1"),
    ]
    assert Event.objects.filter(processed_at__isnull=True).count() == 0


def test_a_batch_that_deadlocks_over_message_ids_tries_again_and_answers_with_the_stored(
    pushed, caplog
):
    pushed()
    for user_id in ("ann", "zed"):
        User.objects.create(id=user_id, attributes={"email": f"{user_id}@example.com"})

    def store(user_id: str, message_id: str | None) -> None:
        Event.objects.create(user_id=user_id, name="purchase", message_id=message_id)

    # The other transaction has written more rows: the database rolls the batch back, not it.
    other = Other(
        [
            lambda: [store("zed", None) for _ in range(50)] and store("ann", "m-2"),
            lambda: store("ann", "m-1"),
        ]
    )
    other.start()
    try:
        other.step(0)  # it has stored m-2, uncommitted
        batcher, answer = run_in_thread(
            lambda: store_events(
                [NewEvent("ann", "purchase", {}, message_id=m) for m in ("m-1", "m-2")]
            )
        )
        # The batch has inserted m-1 and waits on the other's m-2.
        wait_for(
            lambda: scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'Update' "
                "AND INFO LIKE 'INSERT IGNORE INTO%%events%%' AND TIME_MS > 500"
            ),
            "the batch never waited on the other's m-2",
        )
    finally:
        other.finish()  # it stores m-1: each waits on the other
    results = results_of(other, batcher, answer)
    assert "deadlocked" in caplog.text
    stored = dict(Event.objects.filter(user_id="ann").values_list("message_id", "pk"))
    assert sorted(stored) == ["m-1", "m-2"]
    assert [(r.duplicate, r.event.pk) for r in results] == [
        (True, stored["m-1"]),
        (True, stored["m-2"]),
    ]


def test_events_are_processed_in_the_order_stored_though_a_later_batch_committed_first(pushed):
    pushed()
    User.objects.create(id="ann", attributes={"email": "ann@example.com"})

    def first_batch() -> None:
        share_user_ids(["ann"])
        Event.objects.create(user_id="ann", name="login", message_id="first")

    other = Other([first_batch, lambda: None])
    other.start()
    try:
        other.step(0)  # the first batch has stored its event, uncommitted
        batcher, answer = run_in_thread(
            lambda: store_events([NewEvent("ann", "login", {}, message_id="second")])
        )
        # The second batch commits first; processing its event waits for the first batch.
        wait_for(lambda: Event.objects.count() == 1, "the second batch was not stored")
    finally:
        other.finish()
    results_of(other, batcher, answer)
    first, second = Event.objects.order_by("pk")
    assert (first.message_id, second.message_id) == ("first", "second")
    # The second event was not processed ahead of the first, which was stored before it.
    assert second.processed_at is None or first.processed_at is not None
    drain_events()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.processed_at is not None
    assert first.processed_at <= second.processed_at
