"""Events as apps send them: `message_id` makes a retry harmless; `timestamp` says when it
happened, which decides whether a transaction still fires."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.models import OutboxEmail
from segflow.models import Event, User
from segflow.users import NewEvent, store_event, store_events

from .conftest import START, sent
from .test_api import assert_refused, at, send, stored, url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop(api, pushed, clock):
    """The example config (a purchase sends `purchase-confirmation`) and a customer, Ann."""
    pushed()
    api.put(url("ann"), {"attributes": {"email": "ann@example.com", "name": "Ann"}}, format="json")
    return api


def purchase(**extra) -> dict:
    return {"name": "purchase", "attributes": {"orderId": "o-1", "amount": 5}, **extra}


# -- message_id ---------------------------------------------------------------------------------


def test_a_repeated_message_id_is_answered_with_the_stored_event_and_sends_one_email(shop):
    first = send(shop, "POST", url("ann", events=True), purchase(message_id="m-1"))
    assert first.status_code == 201, first.content
    assert first.json()["duplicate"] is False
    assert first.json()["message_id"] == "m-1"

    # The app retries (its first request timed out), even with a changed body.
    again = send(shop, "POST", url("ann", events=True), purchase(message_id="m-1", attributes={}))
    assert again.status_code == 200, again.content
    assert again.json()["duplicate"] is True
    assert {k: v for k, v in again.json().items() if k != "duplicate"} == {
        k: v for k, v in first.json().items() if k != "duplicate"
    }
    assert again.json()["attributes"] == {"orderId": "o-1", "amount": 5}  # the stored one

    assert Event.objects.filter(name="purchase").count() == 1
    assert sent("ann", transaction_name="purchase-confirmation") == ["purchase-confirmation"]


def test_the_message_id_is_unique_across_users(shop):
    send(shop, "POST", url("ann", events=True), purchase(message_id="m-1"))
    response = send(shop, "POST", url("bob", events=True), purchase(message_id="m-1"))
    assert response.status_code == 200
    assert response.json()["duplicate"] is True and response.json()["user_id"] == "ann"
    # Nothing at all for bob: not even the user.
    assert not User.objects.filter(pk="bob").exists()
    assert Event.objects.count() == 1


def test_message_ids_are_compared_exactly(shop):
    message_ids = ["m-1", "M-1", "m-1 "]
    from segflow.fields import ExactCharField

    if ExactCharField(max_length=9).db_parameters(connection).get("collation") == "utf8mb4_bin":
        message_ids.pop()  # a PAD SPACE collation: trailing spaces compare exactly once it goes
    for message_id in message_ids:
        response = send(shop, "POST", url("ann", events=True), purchase(message_id=message_id))
        assert response.status_code == 201, message_id
    assert Event.objects.filter(name="purchase").count() == len(message_ids)


def test_events_without_a_message_id_are_all_stored(shop):
    for _ in range(2):
        assert send(shop, "POST", url("ann", events=True), purchase()).status_code == 201
    assert send(shop, "POST", url("ann", events=True), purchase(message_id=None)).status_code == 201
    assert list(Event.objects.values_list("message_id", flat=True)) == [None, None, None]
    assert sent("ann", transaction_name="purchase-confirmation") == ["purchase-confirmation"] * 3


def test_a_batch_may_repeat_ids_of_earlier_batches_and_of_itself_and_the_first_wins(shop):
    first = send(
        shop,
        "POST",
        "/api/events",
        {"events": [{"user_id": "ann", **purchase(message_id="m-1")}]},
    )
    assert first.status_code == 201
    stored_id = first.json()["events"][0]["id"]

    body = {
        "events": [
            {"user_id": "ann", **purchase(message_id="m-1")},  # of an earlier batch
            {
                "user_id": "ann",
                "name": "purchase",
                "attributes": {"orderId": "o-2"},
                "message_id": "m-2",
            },
            {"user_id": "bob", "name": "purchase", "message_id": "m-2"},  # of itself
            {"user_id": "ann", "name": "page_view"},
            {"user_id": "ann", "name": "page_view"},
        ]
    }
    response = send(shop, "POST", "/api/events", body)
    assert response.status_code == 201, response.content
    events = response.json()["events"]
    assert [e["duplicate"] for e in events] == [True, False, True, False, False]
    assert events[0]["id"] == stored_id
    assert events[2]["id"] == events[1]["id"] and events[2]["user_id"] == "ann"
    assert events[2]["attributes"] == {"orderId": "o-2"}
    assert not User.objects.filter(pk="bob").exists()
    assert Event.objects.count() == 4
    receipts = OutboxEmail.objects.filter(transaction_name="purchase-confirmation")
    assert sorted(receipts.values_list("event_id", flat=True)) == [stored_id, events[1]["id"]]

    # All of them again: nothing new, and the answer says so.
    again = send(shop, "POST", "/api/events", {"events": body["events"][:3]})
    assert again.status_code == 200
    assert [e["duplicate"] for e in again.json()["events"]] == [True, True, True]
    assert Event.objects.count() == 4


@pytest.mark.parametrize(
    ("message_id", "problem"),
    [
        (5, "must be a string, got a number"),
        ("", "must not be empty"),
        ("  ", "must not be empty"),
        ("m" * 256, "must be at most 255 characters, got 256"),
        ("a\nb", "must not contain control characters"),
    ],
)
def test_a_bad_message_id_is_refused_and_nothing_is_stored(shop, message_id, problem):
    before = stored()
    response = send(shop, "POST", url("ann", events=True), purchase(message_id=message_id))
    assert problem in assert_refused(response, 400, "message_id")
    batch = {"events": [{"user_id": "ann", "name": "x"}, {"user_id": "ann", **purchase()}]}
    batch["events"][1]["message_id"] = message_id
    response = send(shop, "POST", "/api/events", batch)
    assert problem in assert_refused(response, 400, "events[1].message_id")
    assert stored() == before


def in_threads(count: int, work) -> list:
    results, errors = [], []
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            barrier.wait()
            results.append(work(n))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


@pytest.mark.mysql_only
def test_concurrent_retries_store_and_confirm_each_message_once(pushed):
    """Eight senders retry the same purchases at once, one at a time and in batches."""
    pushed()
    User.objects.create(id="ann", attributes={"email": "ann@example.com", "name": "Ann"})
    message_ids = [f"m-{n}" for n in range(20)]

    def work(n: int) -> dict[str, int]:
        seen = {}
        if n % 2:
            for message_id in message_ids:
                new = NewEvent("ann", "purchase", {"orderId": message_id}, message_id=message_id)
                seen[message_id] = store_event(new).event.pk
        else:
            order = message_ids[n:] + message_ids[:n]
            for start in (0, 10):
                batch = [
                    NewEvent("ann", "purchase", {"orderId": m}, message_id=m)
                    for m in order[start : start + 10] + order[start : start + 2]  # repeats too
                ]
                for recorded in store_events(batch):
                    seen[recorded.event.message_id] = recorded.event.pk
        return seen

    answers = in_threads(8, work)
    stored_ids = dict(Event.objects.values_list("message_id", "pk"))
    assert len(stored_ids) == 20
    assert all(answer == stored_ids for answer in answers)  # every sender got the stored event
    receipts = OutboxEmail.objects.filter(transaction_name="purchase-confirmation")
    assert sorted(receipts.values_list("event_id", flat=True)) == sorted(stored_ids.values())
    assert not Event.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.mysql_only
def test_concurrent_senders_of_one_message_id_for_different_users_store_it_once(pushed):
    """The unique key decides when the ids are stored after a batch looked for them: each
    thread's batch waits on the first one's uncommitted ids, then leaves them out."""
    pushed()
    message_ids = [f"m-{n}" for n in range(10)]

    def work(n: int) -> list[tuple[str, bool]]:
        user_id = f"u{n}"
        if n == 0:
            new = NewEvent(user_id, "purchase", {}, message_id="m-3")
            return [(store_event(new).event.user_id, False)]
        batch = [NewEvent(user_id, "purchase", {}, message_id=m) for m in message_ids]
        return [(r.event.user_id, r.duplicate) for r in store_events(batch)]

    answers = in_threads(6, work)
    assert Event.objects.count() == 10
    stored_by = dict(Event.objects.values_list("message_id", "user_id"))
    for answer in answers:
        if len(answer) == 10:  # a batch's answer: the stored event for each id
            assert [user_id for user_id, _ in answer] == [stored_by[m] for m in message_ids]
    # One transaction each (skipped: these users have no address), not one per sender.
    receipts = OutboxEmail.objects.filter(transaction_name="purchase-confirmation")
    assert sorted(receipts.values_list("event__message_id", flat=True)) == sorted(message_ids)
    assert not Event.objects.filter(processed_at__isnull=True).exists()


def test_a_message_id_stored_after_the_batch_looked_is_not_stored_twice(shop):
    """What the unique key does when another request stores an id for another user between the
    batch's read and its insert (simulated: the read sees nothing)."""
    from unittest import mock

    import segflow.users

    send(shop, "POST", url("bob", events=True), purchase(message_id="m-1"))
    real = segflow.users._stored_events
    reads = []

    def stale_first_read(message_ids):
        reads.append(list(message_ids))
        return {} if len(reads) == 1 else real(message_ids)

    body = {
        "events": [
            {"user_id": "ann", "name": "login", "message_id": "m-0"},
            {"user_id": "ann", **purchase(message_id="m-1")},
            {"user_id": "ann", **purchase(message_id="m-1")},
        ]
    }
    with mock.patch.object(segflow.users, "_stored_events", stale_first_read):
        response = send(shop, "POST", "/api/events", body)
    assert response.status_code == 201, response.content
    assert len(reads) == 2 and reads[1] == ["m-1"]
    events = response.json()["events"]
    assert [e["duplicate"] for e in events] == [False, True, True]
    assert events[1]["id"] == events[2]["id"] == Event.objects.get(message_id="m-1").pk
    assert events[1]["user_id"] == "bob"
    assert Event.objects.count() == 2
    assert sent(transaction_name="purchase-confirmation") == ["purchase-confirmation"]  # bob's


def test_a_batch_mixing_events_with_and_without_ids_is_stored_in_order(shop):
    send(shop, "POST", url("bob", events=True), purchase(message_id="m-1"))
    body = {
        "events": [
            {"user_id": "ann", "name": "a"},
            {"user_id": "ann", **purchase(message_id="m-1")},
            {"user_id": "ann", "name": "b", "message_id": "m-2"},
            {"user_id": "ann", "name": "c"},
        ]
    }
    events = send(shop, "POST", "/api/events", body).json()["events"]
    assert [(e["name"], e["user_id"], e["duplicate"]) for e in events] == [
        ("a", "ann", False),
        ("purchase", "bob", True),
        ("b", "ann", False),
        ("c", "ann", False),
    ]
    assert events[0]["id"] < events[2]["id"] < events[3]["id"]
    assert Event.objects.count() == 4


def test_stored_events_are_whole_rows_that_save_and_read_like_any_other(shop):
    """Events are made without Model.__init__ on the hot path: each must still hold every column
    (none left to load on access) and be known as saved."""
    new = NewEvent("ann", "viewed", {"page": "/"}, message_id="m-9")
    [recorded] = store_events([new])
    event = recorded.event
    built = Event(user_id="ann", name="viewed")
    assert set(event.__dict__) - {"_state"} == set(built.__dict__) - {"_state"}
    assert event.get_deferred_fields() == set()
    assert (event._state.adding, event._state.db) == (False, connection.alias)
    assert event.pk == Event.objects.get(message_id="m-9").pk
    assert event.user.attributes["name"] == "Ann"
    event.attributes = {"page": "/cart"}
    event.save(update_fields=["attributes"])
    assert Event.objects.get(pk=event.pk).attributes == {"page": "/cart"}
    assert Event.objects.count() == 1  # (saved in place, not inserted again)


def assert_stored_as_given(new: list[NewEvent], recorded: list) -> None:
    for event_in, r in zip(new, recorded, strict=True):
        row = Event.objects.get(pk=r.event.pk)
        assert (row.user_id, row.name, row.message_id) == (
            event_in.user_id,
            event_in.name,
            event_in.message_id,
        )
        assert (row.attributes, row.context) == (event_in.attributes, event_in.context)


def test_a_batch_stores_quotes_backslashes_and_percent_signs_as_given():
    """On MySQL/MariaDB a batch's VALUES are written out, not sent as parameters."""
    texts = ["o'brien", "back\\slash", "50%s", "%(x)s", 'say "hi"', "é😀", "a\\'; --"]
    new = [
        NewEvent(
            user_id=text,
            name=f"name {text}",
            attributes={"text": text, "nested": [text, {text: None}], "nul": "\u0000"},
            message_id=f"m {text}",
            context={"library": {"name": text}},
        )
        for text in texts
    ]
    recorded = store_events(new)
    assert [r.duplicate for r in recorded] == [False] * len(texts)
    assert_stored_as_given(new, recorded)
    assert set(User.objects.values_list("pk", flat=True)) == set(texts)


# Text as a database may hold it in an id: no control characters; anything in attributes.
id_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    str.strip
)
json_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=30)
json_objects = st.dictionaries(
    st.text(max_size=10),
    st.recursive(
        json_leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    ),
    max_size=4,
)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(
        st.tuples(id_text, id_text, json_objects, st.none() | id_text, json_objects),
        min_size=1,
        max_size=6,
    )
)
def test_any_batch_is_stored_as_given(db, batch):
    """Whatever text a batch holds, each event reads back as it was given (on MySQL/MariaDB
    through the statement segflow writes out itself)."""
    run = uuid.uuid4().hex[:8]
    new = [
        NewEvent(
            user_id=f"{run}{user_id}",
            name=name,
            attributes=attributes,
            message_id=None if message_id is None else f"{run}{n}{message_id}",
            context=context,
        )
        for n, (user_id, name, attributes, message_id, context) in enumerate(batch)
    ]
    recorded = store_events(new)
    assert_stored_as_given(new, recorded)


# -- timestamp ----------------------------------------------------------------------------------


def test_the_timestamp_is_when_it_happened_beside_when_it_arrived(shop, clock):
    response = send(
        shop,
        "POST",
        url("ann", events=True),
        {"name": "signed_up", "timestamp": "2026-03-02T10:30:00+02:00"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert at(body["timestamp"]) == START - timedelta(minutes=30)  # 08:30 UTC
    assert body["timestamp"] == "2026-03-02T08:30:00Z"
    assert at(body["created_at"]) == START
    event = Event.objects.get(pk=body["id"])
    assert (event.timestamp, event.created_at) == (START - timedelta(minutes=30), START)

    # Without one, it happened as it arrived.
    plain = send(shop, "POST", url("ann", events=True), {"name": "login"}).json()
    assert at(plain["timestamp"]) == at(plain["created_at"]) == START
    listed = shop.get(url("ann", events=True)).json()["results"]
    assert {e["name"]: at(e["timestamp"]) for e in listed}["signed_up"] == at(body["timestamp"])


@pytest.mark.parametrize(
    ("timestamp", "problem"),
    [
        ("2026-03-02T09:00:00", "must have a UTC offset (Z or +hh:mm)"),
        ("2026-03-02", "must have a UTC offset"),
        ("yesterday", "must be an ISO 8601 time"),
        (1772442000, "must be an ISO 8601 string"),
        ("1969-12-31T23:59:59Z", "must not be before 1970-01-01T00:00:00Z"),
        ("0001-01-01T00:00:00+01:00", "is out of range"),
        ("2026-03-03T09:00:01Z", "must not be more than 86400 seconds in the future"),
    ],
)
def test_a_bad_timestamp_is_refused_naming_it_and_nothing_is_stored(
    shop, clock, timestamp, problem
):
    before = stored()
    response = send(shop, "POST", url("ann", events=True), purchase(timestamp=timestamp))
    assert problem in assert_refused(response, 400, "timestamp")
    batch = {"events": [{"user_id": "ann", "name": "x"}, {"user_id": "ann", **purchase()}]}
    batch["events"][1]["timestamp"] = timestamp
    response = send(shop, "POST", "/api/events", batch)
    assert problem in assert_refused(response, 400, "events[1].timestamp")
    assert stored() == before


def test_how_far_ahead_a_timestamp_may_be_is_a_setting(shop, clock, settings):
    settings.SEGFLOW_MAX_EVENT_FUTURE_SECONDS = 60
    ahead = purchase(timestamp="2026-03-02T09:01:00Z")
    assert send(shop, "POST", url("ann", events=True), ahead).status_code == 201
    response = send(
        shop, "POST", url("ann", events=True), purchase(timestamp="2026-03-02T09:01:01Z")
    )
    assert "not be more than 60 seconds in the future" in assert_refused(response, 400, "timestamp")


def test_backfilled_purchases_enter_segments_but_send_no_confirmation(
    api, pushed, write_config, clock
):
    pushed(
        write_config(
            """
            config = {
                "templates": {},
                "segments": {
                    "buyers": {"sql": "SELECT e.user_id AS id FROM events e "
                                      "WHERE e.name = 'purchase'"},
                },
                "campaigns": {},
                "transactions": {
                    "receipt": {"event": "purchase", "subject": "Thanks",
                                "html": lambda user, event: "<p>thanks</p>"},
                },
            }
            """
        )
    )
    api.put(url("ann"), {"attributes": {"email": "ann@example.com"}}, format="json")
    # Last year's purchases, imported: a segment sees them, no one gets an email for them.
    old = [
        {"user_id": "ann", "name": "purchase", "timestamp": f"2025-{m:02}-01T12:00:00Z"}
        for m in range(1, 13)
    ]
    assert send(api, "POST", "/api/events", {"events": old}).status_code == 201
    assert api.get(url("ann")).json()["segments"] == ["buyers"]
    assert sent("ann") == []
    assert not Event.objects.filter(processed_at__isnull=True).exists()

    # A purchase that happened within the hour (SEGFLOW_TRANSACTION_MAX_AGE_SECONDS) is
    # confirmed, like one without a timestamp.
    recent = purchase(timestamp="2026-03-02T08:00:00Z")
    assert send(api, "POST", url("ann", events=True), recent).status_code == 201
    assert send(api, "POST", url("ann", events=True), purchase()).status_code == 201
    assert sent("ann") == ["receipt", "receipt"]
    # One from just over the hour is not.
    late = purchase(timestamp="2026-03-02T07:59:59Z")
    assert send(api, "POST", url("ann", events=True), late).status_code == 201
    assert sent("ann") == ["receipt", "receipt"]


def test_a_fresh_event_processed_late_is_still_confirmed(shop, clock, settings):
    """The age that counts is how long before its arrival the event happened: a worker outage
    that delays processing does not lose confirmations."""
    settings.SEGFLOW_TASKS_INLINE = False
    from unittest import mock

    with mock.patch("segflow.dispatch.enqueue"):  # a broker takes the task; no worker runs it
        response = send(shop, "POST", url("ann", events=True), purchase())
    assert response.status_code == 201
    assert sent("ann", transaction_name="purchase-confirmation") == []
    settings.SEGFLOW_TASKS_INLINE = True
    clock.advance(hours=5)
    from segflow.pipeline import tick

    tick()  # the tick drains the unprocessed event
    assert sent("ann", transaction_name="purchase-confirmation") == ["purchase-confirmation"]


def test_the_age_limit_for_transactions_is_a_setting(shop, clock, settings):
    settings.SEGFLOW_TRANSACTION_MAX_AGE_SECONDS = 24 * 3600
    week_old = purchase(timestamp="2026-02-23T09:00:00Z")
    day_old = purchase(timestamp="2026-03-01T09:00:00Z")
    for body in (week_old, day_old):
        assert send(shop, "POST", url("ann", events=True), body).status_code == 201
    receipts = OutboxEmail.objects.filter(transaction_name="purchase-confirmation")
    assert list(receipts.values_list("event__timestamp", flat=True)) == [START - timedelta(days=1)]


def test_segments_read_when_an_event_happened_or_when_it_arrived(api, pushed, write_config, clock):
    """The SQL and the evaluator of docs/segments.md, "When it happened"."""
    pushed(
        write_config(
            """
            from datetime import timedelta

            from django.db.models import Exists, OuterRef

            from segflow.models import Event


            def recent_buyers(users, now):
                purchases = Event.objects.filter(
                    user=OuterRef("pk"), name="purchase", timestamp__gte=now - timedelta(days=30)
                )
                return users.filter(Exists(purchases))


            config = {
                "templates": {},
                "segments": {
                    "bought-last-30-days": {
                        "sql": "SELECT e.user_id AS id FROM events e "
                        "WHERE e.name = 'purchase' AND e.timestamp >= %(since)s",
                        "params": lambda now: {"since": now - timedelta(days=30)},
                    },
                    "recent-buyers": {"evaluator": recent_buyers},
                    "heard-of-a-purchase-lately": {
                        "sql": "SELECT e.user_id AS id FROM events e "
                        "WHERE e.name = 'purchase' AND e.created_at >= %(since)s",
                        "params": lambda now: {"since": now - timedelta(days=30)},
                    },
                },
                "campaigns": {},
            }
            """
        )
    )
    imported = {"name": "purchase", "timestamp": "2026-01-05T12:00:00Z"}  # two months ago
    assert send(api, "POST", url("ann", events=True), imported).status_code == 201
    assert api.get(url("ann")).json()["segments"] == ["heard-of-a-purchase-lately"]

    recent = {"name": "purchase", "timestamp": "2026-02-20T12:00:00Z"}  # ten days ago
    assert send(api, "POST", url("bob", events=True), recent).status_code == 201
    assert api.get(url("bob")).json()["segments"] == [
        "bought-last-30-days",
        "heard-of-a-purchase-lately",
        "recent-buyers",
    ]


def test_has_done_x_as_exists_and_as_distinct_places_users_alike(api, pushed, write_config, clock):
    """The two ways docs/segments.md shows of "has done X" ("Has done X": write it with EXISTS)."""
    pushed(
        write_config(
            """
            config = {
                "templates": {},
                "segments": {
                    "buyers": {
                        "sql": "SELECT u.id FROM users u WHERE EXISTS "
                        "(SELECT 1 FROM events e WHERE e.user_id = u.id AND e.name = 'purchase')",
                    },
                    "buyers-distinct": {
                        "sql": "SELECT DISTINCT e.user_id AS id FROM events e "
                        "WHERE e.name = 'purchase'",
                    },
                },
                "campaigns": {},
            }
            """
        )
    )
    for user, name, times in (("ann", "purchase", 3), ("bob", "login", 2), ("cat", "purchase", 1)):
        for _ in range(times):
            assert send(api, "POST", url(user, events=True), {"name": name}).status_code == 201
    assert api.get(url("ann")).json()["segments"] == ["buyers", "buyers-distinct"]
    assert api.get(url("bob")).json()["segments"] == []
    assert api.get(url("cat")).json()["segments"] == ["buyers", "buyers-distinct"]
