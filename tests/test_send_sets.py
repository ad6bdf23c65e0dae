"""Campaign sends in sets: a batch's outbox rows in one insert, sends claimed and recorded a set
per commit, and the bound that leaves on a crash: at most one set `unknown`, nothing sent twice.

The provider is the local Postmark stand-in of tests/email_support.py, reached through anymail;
a crash is a BaseException raised right after the provider accepted an email, before segflow
recorded it (the worst moment: it cannot tell which emails went out).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from delivery.models import OutboxEmail, Suppression
from delivery.outbox import EmailOrigin, OutboxWriter
from delivery.providers.postmark import PostmarkBackend, PostmarkProvider
from delivery.sending import _claim_rows, deliver_emails, mark_stale_sending
from segflow.live_config import live_config
from segflow.models import User
from segflow.pipeline import tick
from templates.rendering import html_to_text, text_part

from .email_support import POSTMARK
from .email_support import postmark as postmark  # noqa: F401 - the fixture
from .test_admin_counts import assert_counts_are_true

CONFIG = (
    """
def hello(ctx, rt):
    sent = yield rt.send_email("hello")
    ctx.user.helloOutbox = sent.outbox_id
    yield rt.wait(days=1)

config = {
    "email_provider": {"config": PROVIDER, "from_address": "hello@acme.test"},
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>Hello</p>"}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["all"], "behavior": "static", "flow": hello}},
}
"""
).replace("PROVIDER", POSTMARK)


def make_users(prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{n:03}" for n in range(count)]
    User.objects.bulk_create(
        User(id=i, attributes={"email": f"{i}@example.com"}, evaluation_pending=False) for i in ids
    )
    return ids


def received(postmark) -> Counter:
    return Counter(email["To"] for email in postmark.emails)


@pytest.mark.django_db(transaction=True)
def test_a_batch_stores_its_emails_in_one_insert_and_each_flow_sees_its_email_id(
    write_config,
    pushed,
    clock,
    postmark,
    settings,
):
    settings.SEGFLOW_BATCH_SIZE = 50
    ids = make_users("one", 30)
    pushed(write_config(CONFIG))
    with CaptureQueriesContext(connection) as queries:
        tick()  # one batch of 30 cursors, then its delivery
    table = connection.ops.quote_name("outbox")
    inserts = [q["sql"] for q in queries if q["sql"].startswith(f"INSERT INTO {table}")]
    assert len(inserts) == 1
    rows = {row.user_id: row for row in OutboxEmail.objects.all()}
    assert set(rows) == set(ids)
    assert {row.status for row in rows.values()} == {"sent"}
    assert received(postmark) == Counter(f"{i}@example.com" for i in ids)
    # The flow read `outbox_id` in the run that queued the email: the row's own id.
    for user in User.objects.filter(pk__in=ids):
        assert user.attributes["helloOutbox"] == rows[user.pk].pk
    assert_counts_are_true()


class Crash(BaseException):
    """The process dies: nothing after this line of the sender runs."""


_examples = itertools.count()


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    emails=st.integers(min_value=1, max_value=12),
    set_size=st.integers(min_value=1, max_value=6),
    crash_after=st.integers(min_value=1, max_value=12),
)
def test_a_crash_leaves_at_most_one_set_unknown_and_sends_nothing_twice(
    write_config,
    pushed,
    postmark,
    settings,
    monkeypatch,
    emails,
    set_size,
    crash_after,
):
    settings.SEGFLOW_EMAIL_SEND_BATCH = set_size
    pushed(write_config(CONFIG))
    config = live_config.sync()
    prefix = f"crash{next(_examples)}"
    users = User.objects.in_bulk(make_users(prefix, emails))
    writer = OutboxWriter(config, list(users.values()), campaign=False)
    rows = [
        writer.queue(config.templates["hello"], user, EmailOrigin(key=f"{prefix}:{user.pk}"))
        for user in users.values()
    ]
    writer.flush()
    ids = [row.pk for row in rows]
    postmark.requests.clear()

    real_post = PostmarkBackend.post_to_esp
    accepted = []

    def post_then_maybe_die(self, payload, message):
        response = real_post(self, payload, message)
        accepted.append(1)
        if len(accepted) == crash_after:
            raise Crash
        return response

    monkeypatch.setattr(PostmarkBackend, "post_to_esp", post_then_maybe_die)
    try:
        deliver_emails(ids, config)
    except Crash:
        pass
    monkeypatch.setattr(PostmarkBackend, "post_to_esp", real_post)

    # The sweep, once the crashed sender's rows are old enough; then delivery runs again.
    later = timezone.now() + timedelta(seconds=settings.SEGFLOW_EMAIL_SENDING_STALE_SECONDS + 1)
    unknown = mark_stale_sending(later)
    deliver_emails(ids, config)

    statuses = Counter(OutboxEmail.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert set(statuses) <= {"sent", "unknown"}
    assert statuses["unknown"] == unknown <= set_size
    if crash_after > emails:
        assert unknown == 0
    got = received(postmark)
    assert all(n == 1 for n in got.values()), got
    addresses = dict(OutboxEmail.objects.filter(pk__in=ids).values_list("to_address", "status"))
    for address, status in addresses.items():
        # sent: the provider has it once; unknown: the provider got it at most once.
        assert got[address] == 1 if status == "sent" else got[address] <= 1
    assert_counts_are_true()


@pytest.mark.django_db
def test_a_set_is_claimed_in_one_commit_unless_another_sender_took_a_row(
    write_config,
    pushed,
    postmark,
):
    pushed(write_config(CONFIG))
    config = live_config.sync()
    users = User.objects.in_bulk(make_users("claim", 4))
    writer = OutboxWriter(config, list(users.values()), campaign=False)
    rows = [
        writer.queue(config.templates["hello"], user, EmailOrigin(key=f"claim:{user.pk}"))
        for user in users.values()
    ]
    writer.flush()
    # Another sender claimed the second row after this one read them all.
    OutboxEmail.objects.filter(pk=rows[1].pk).update(status="sending", attempts=1)
    won = _claim_rows(rows)
    assert [row.pk for row in won] == [rows[0].pk, rows[2].pk, rows[3].pk]
    assert OutboxEmail.objects.get(pk=rows[1].pk).attempts == 1  # not claimed twice
    assert set(OutboxEmail.objects.values_list("status", flat=True)) == {"sending"}


@pytest.mark.django_db(transaction=True)
def test_a_set_that_outlasts_half_the_stale_time_hands_its_unsent_rows_back(
    write_config,
    pushed,
    postmark,
    settings,
    monkeypatch,
):
    # No time at all: each set makes its first call, then gives the rest back to `queued`
    # (never handed to the provider, so safe to send later), and delivery takes them again.
    settings.SEGFLOW_EMAIL_SENDING_STALE_SECONDS = 0
    settings.SEGFLOW_EMAIL_SEND_BATCH = 5
    monkeypatch.setattr(PostmarkProvider, "batch_limit", 2)  # a set of 5 takes 3 calls
    pushed(write_config(CONFIG))
    config = live_config.sync()
    users = User.objects.in_bulk(make_users("slow", 5))
    writer = OutboxWriter(config, list(users.values()), campaign=False)
    for user in users.values():
        writer.queue(config.templates["hello"], user, EmailOrigin(key=f"slow:{user.pk}"))
    writer.flush()
    ids = list(OutboxEmail.objects.values_list("pk", flat=True))
    deliver_emails(ids, config)  # the rows given back are delivered again after commit
    rows = OutboxEmail.objects.filter(pk__in=ids)
    assert {row.status for row in rows} == {"sent"}
    assert {row.attempts for row in rows} == {1}
    assert received(postmark) == Counter(f"{u}@example.com" for u in users)
    # 5 rows: a call of 2, the other 3 back to the queue; a call of 2, 1 back; a call of 1.
    assert [r.path for r in postmark.requests] == ["/email/batch", "/email/batch", "/email"]
    assert_counts_are_true()


def queue_emails(config, prefix: str, count: int) -> list[int]:
    users = User.objects.in_bulk(make_users(prefix, count))
    writer = OutboxWriter(config, list(users.values()), campaign=True)
    rows = [
        writer.queue(config.templates["hello"], users[user_id], EmailOrigin(key=f"{prefix}:{n}"))
        for n, user_id in enumerate(sorted(users))
    ]
    writer.flush()
    return [row.pk for row in rows]


def ok(to: str, message_id: str) -> dict:
    return {"To": to, "MessageID": message_id, "ErrorCode": 0, "Message": "OK"}


@pytest.mark.django_db
def test_a_set_goes_to_postmark_in_one_batch_call_and_each_row_keeps_its_message_id(
    write_config,
    pushed,
    postmark,
    settings,
):
    settings.SEGFLOW_EMAIL_SEND_BATCH = 10
    pushed(write_config(CONFIG))
    config = live_config.sync()
    ids = queue_emails(config, "batch", 4)
    addresses = [f"batch-{n:03}@example.com" for n in range(4)]
    postmark.answer(200, [ok(to, f"pm-{n}") for n, to in enumerate(addresses)])

    with CaptureQueriesContext(connection) as queries:
        assert set(deliver_emails(ids, config).values()) == {"sent"}

    # One statement claims the set, one records all its outcomes.
    table = connection.ops.quote_name("outbox")
    updates = [q["sql"] for q in queries if q["sql"].startswith(f"UPDATE {table}")]
    assert len(updates) == 2
    assert [r.path for r in postmark.requests] == ["/email/batch"]
    (call,) = postmark.requests
    assert call.headers["X-Postmark-Server-Token"] == "server-token-from-the-environment"
    assert [message["To"] for message in call.body] == addresses
    rows = OutboxEmail.objects.in_bulk(ids)
    for n, (outbox_id, message) in enumerate(zip(ids, call.body, strict=True)):
        row = rows[outbox_id]
        # Each message is the one a single send would carry, built by anymail the same way.
        assert message["Metadata"] == {"segflow_outbox_id": str(outbox_id)}
        assert message["HtmlBody"] == row.html and message["Subject"] == "Hello"
        assert message["From"] == "hello@acme.test" and message["To"] == row.to_address
        assert message["TextBody"] == row.text
        assert row.message_id == f"pm-{n}" and row.attempts == 1
    assert_counts_are_true()


@pytest.mark.django_db
def test_a_row_the_sweep_took_mid_send_is_recorded_on_its_own_and_the_answer_wins(
    write_config,
    pushed,
    postmark,
    settings,
    monkeypatch,
):
    pushed(write_config(CONFIG))
    config = live_config.sync()
    ids = queue_emails(config, "swept", 3)
    real_send = PostmarkProvider.send_batch

    def sweep_during_the_call(self, backend, messages):
        answers = real_send(self, backend, messages)
        # The sweep gave up on the second row while its answer was on the way back.
        OutboxEmail.objects.filter(pk=ids[1]).update(status="unknown")
        return answers

    monkeypatch.setattr(PostmarkProvider, "send_batch", sweep_during_the_call)
    statuses = deliver_emails(ids, config)

    # Postmark took all three: the late answer turns the `unknown` row into `sent` as well.
    assert [statuses[i] for i in ids] == ["sent"] * 3
    rows = OutboxEmail.objects.in_bulk(ids)
    assert all(rows[i].status == "sent" and rows[i].message_id for i in ids)
    assert len({rows[i].message_id for i in ids}) == 3  # each row its own message id
    assert len(received(postmark)) == 3


@pytest.mark.django_db
def test_postmark_refusing_some_messages_of_a_batch_fails_only_those(
    write_config,
    pushed,
    postmark,
    settings,
):
    pushed(write_config(CONFIG))
    config = live_config.sync()
    ids = queue_emails(config, "part", 4)
    inactive = (
        "You tried to send to recipient(s) that have been marked as inactive.\n"
        "Found inactive addresses: part-001@example.com.\n"
        "Inactive recipients are ones that have generated a hard bounce, a spam complaint, "
        "or a manual suppression."
    )
    postmark.answer(
        200,
        [
            ok("part-000@example.com", "pm-0"),
            {"ErrorCode": 406, "Message": inactive},
            {"ErrorCode": 300, "Message": "Invalid 'To' address: 'part-002@example.com'."},
            ok("part-003@example.com", "pm-3"),
        ],
    )

    statuses = deliver_emails(ids, config)

    assert [statuses[i] for i in ids] == ["sent", "failed", "failed", "sent"]
    rows = OutboxEmail.objects.in_bulk(ids)
    assert "ErrorCode 406" in rows[ids[1]].reason
    assert "Invalid 'To' address" in rows[ids[2]].reason
    assert rows[ids[2]].next_attempt_at is None  # refused for good: not tried again
    # Only the address Postmark calls inactive is never mailed again.
    assert list(Suppression.objects.values_list("address", flat=True)) == ["part-001@example.com"]
    assert_counts_are_true()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "status, body, delay, expected",
    [
        # Not taken, and may be later: all of the set waits for a retry.
        (503, {"ErrorCode": 100, "Message": "Service unavailable"}, 0, "queued"),
        # The call itself refused (a malformed batch): none was sent, none will be.
        (422, {"ErrorCode": 402, "Message": "Invalid JSON"}, 0, "failed"),
        # An answer that does not say what became of each message: they may have gone out.
        (200, {"ErrorCode": 0, "Message": "OK"}, 0, "unknown"),
        # No answer in time (the fixture's timeout is 0.5 s): the same doubt.
        (200, [], 1.5, "unknown"),
    ],
)
def test_a_failed_batch_call_decides_for_every_message_of_it(
    write_config,
    pushed,
    postmark,
    settings,
    status,
    body,
    delay,
    expected,
):
    pushed(write_config(CONFIG))
    config = live_config.sync()
    ids = queue_emails(config, f"call{status}{delay}", 3)
    postmark.answer(status, body, delay=delay)

    statuses = deliver_emails(ids, config)

    assert [statuses[i] for i in ids] == [expected] * 3
    rows = OutboxEmail.objects.filter(pk__in=ids)
    if expected == "queued":
        assert all(row.next_attempt_at is not None and "503" in row.reason for row in rows)
    assert len(postmark.requests) == 1  # never a second call for the same emails
    assert not Suppression.objects.exists()
    assert_counts_are_true()


def test_the_postmark_connection_keeps_the_environments_proxy(monkeypatch, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "POSTMARK_API_URL": "https://api.postmarkapp.com/"}
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    backend = PostmarkBackend(server_token="t")
    session = backend.create_session()
    assert session.proxies.get("https") == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "api.postmarkapp.com")
    assert "https" not in PostmarkBackend(server_token="t").create_session().proxies


TEMPLATES = [
    "<p>Hello {name}</p><p><a href='{url}'>Unsubscribe</a></p>",
    "<table><tr><td>{name}</td><td>{url}</td></tr><tr><td>x</td><td>y</td></tr></table>",
    '<ul><li>{name}</li><li><a href="{url}">stop</a> {url}</li></ul><div>{name}</div>',
]


@given(
    template=st.sampled_from(TEMPLATES),
    name=st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=20),
    token=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789-_:", max_size=80),
)
def test_the_remembered_text_part_is_the_text_part_of_each_email(template, name, token):
    url = f"https://segflow.example.com/unsubscribe/{token}/"
    html = template.format(name=name.replace("<", "").replace("&", ""), url=url)
    assert text_part(html, url) == html_to_text(html)
