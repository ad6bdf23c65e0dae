"""Cursors are advanced, and emails delivered, in batches: a batch behaves as its members would
one by one, a bad member harms only itself, and a batch never sends anything twice."""

import pytest
from django.core import mail

from campaigns.models import Cursor
from delivery.models import OutboxEmail, Suppression, Unsubscription
from delivery.sending import deliver_emails
from segflow.live_config import live_config
from segflow.models import User
from segflow.pipeline import tick

from .conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
def hello(ctx, rt):
    if ctx.user.loops:
        while True:
            yield rt.send_email("hello")
    yield rt.send_email("hello")
    yield rt.wait(days=1)
    yield rt.send_email("again")

html = lambda user: "<p>hi " + user.id + "</p>"
config = {
    "templates": {"hello": {"subject": "Hello", "html": html},
                  "again": {"subject": "Again", "html": html}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["all"], "behavior": "static", "flow": hello}},
}
"""


def make_users(count: int, **extra) -> list[str]:
    ids = [f"u{n:03}" for n in range(count)]
    User.objects.bulk_create(
        User(id=i, attributes={"email": f"{i}@example.com", **extra}, evaluation_pending=False)
        for i in ids
    )
    return ids


def test_a_batch_advances_every_due_cursor_and_a_looping_flow_fails_alone(
    write_config, pushed, clock, settings
):
    settings.SEGFLOW_BATCH_SIZE = 50
    ids = make_users(30)
    User.objects.filter(pk="u007").update(attributes={"email": "u007@x.com", "loops": True})
    pushed(write_config(CONFIG))
    tick()  # one batch of 30 due cursors

    looping = Cursor.objects.get(user_id="u007")
    assert looping.status == Cursor.Status.FAILED and "without a wait" in looping.end_reason
    assert sent("u007") == []
    for user_id in ids:
        if user_id != "u007":
            assert sent(user_id) == ["hello"], user_id
    assert OutboxEmail.objects.filter(status="sent").count() == 29
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        f"{i}@example.com" for i in ids if i != "u007"
    )
    # Each email carries its own user's content, not a neighbour's from the same batch.
    assert all(m.to[0].split("@")[0] in m.body for m in mail.outbox)

    clock.advance_and_tick(days=1)
    assert OutboxEmail.objects.filter(template_name="again", status="sent").count() == 29
    assert Cursor.objects.filter(status=Cursor.Status.COMPLETED).count() == 29
    clock.advance_and_tick(days=3)
    assert len(mail.outbox) == 58  # nothing twice


def test_a_delivery_batch_sends_each_queued_row_once_and_skips_rows_blocked_since(
    write_config, pushed, clock, settings
):
    pushed(write_config(CONFIG))
    make_users(5)
    User.objects.create(id="twin", attributes={"email": "U001@Example.com"})
    rows = [
        OutboxEmail.objects.create(
            key=f"test:{user_id}",
            user_id=user_id,
            to_address=User.objects.get(pk=user_id).email,
            subject="Hi",
            html="<p>hi</p>",
            text="hi",
            campaign_name="hello" if user_id != "twin" else "",
        )
        for user_id in ("u000", "u001", "u002", "u003", "u004", "twin")
    ]
    Suppression.objects.create(address="u001@example.com", reason=Suppression.Reason.HARD_BOUNCE)
    Unsubscription.objects.create(user_id="u002", method=Unsubscription.Method.LINK)
    OutboxEmail.objects.filter(pk=rows[3].pk).update(status=OutboxEmail.Status.SENDING)

    outcome = deliver_emails([r.pk for r in rows], live_config.current())

    assert outcome == {
        rows[0].pk: "sent",
        rows[1].pk: "skipped",  # suppressed address
        rows[2].pk: "skipped",  # unsubscribed: campaign email no longer goes
        rows[3].pk: "sending",  # another sender holds it
        rows[4].pk: "sent",
        rows[5].pk: "skipped",  # the same suppressed address, written differently
    }
    # (User.email is the normalised address, so the twin's row holds it in lower case.)
    assert "u001@example.com is suppressed" in OutboxEmail.objects.get(pk=rows[5].pk).reason
    assert "unsubscribed" in OutboxEmail.objects.get(pk=rows[2].pk).reason
    assert sorted(m.to[0] for m in mail.outbox) == ["u000@example.com", "u004@example.com"]

    assert deliver_emails([r.pk for r in rows], live_config.current())[rows[0].pk] == "sent"
    assert len(mail.outbox) == 2  # a second delivery of the same batch sends nothing


class OneMessageSMTPServer:
    """A local SMTP server that takes one message per connection, then hangs up, as a server
    with a per-connection limit does."""

    def __init__(self) -> None:
        import socket
        import threading

        self.messages: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._stopping:
                conn.close()
                return
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"220 test\r\n")
                for raw in lines:
                    command = raw.decode().strip().upper()
                    if command.startswith(("EHLO", "HELO")):
                        conn.sendall(b"250 test\r\n")
                    elif command.startswith(("MAIL", "RCPT")):
                        conn.sendall(b"250 ok\r\n")
                    elif command == "DATA":
                        conn.sendall(b"354 go on\r\n")
                        body = []
                        for data in lines:
                            if data == b".\r\n":
                                break
                            body.append(data.decode())
                        self.messages.append("".join(body))
                        conn.sendall(b"250 queued\r\n")
                        break  # one message, then hang up
                    elif command == "QUIT":
                        conn.sendall(b"221 bye\r\n")
                        break

    def close(self) -> None:
        # Stop the thread before closing the listener: a thread that calls accept() just after
        # the close can take the connections of whatever socket reuses its descriptor (later in
        # the run, the live server's). Closing does not wake accept(): connecting does.
        import socket

        self._stopping = True
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        self._thread.join(timeout=5)
        self.sock.close()


def test_an_smtp_server_hanging_up_between_messages_loses_none_of_a_batch(
    write_config, pushed, clock, settings
):
    server = OneMessageSMTPServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_TIMEOUT = 5
    try:
        pushed(write_config(CONFIG))
        ids = make_users(4)
        rows = [
            OutboxEmail.objects.create(
                key=f"test:{user_id}", user_id=user_id, to_address=f"{user_id}@example.com",
                subject="Hi", html="<p>hi</p>", text="hi",
            )
            for user_id in ids
        ]  # fmt: skip
        outcome = deliver_emails([r.pk for r in rows], live_config.current())
    finally:
        server.close()
    assert set(outcome.values()) == {"sent"}, outcome
    assert len(server.messages) == 4


def test_a_cursor_that_breaks_its_batch_holds_up_only_itself(write_config, pushed, clock):
    make_users(10)
    User.objects.filter(pk="u004").update(attributes={"email": "u004@x.com", "poison": True})
    pushed(
        write_config(
            """
def hello(ctx, rt):
    if ctx.user.poison:
        ctx.user.seen = {1, 2}  # a set is no JSON: saving the user fails
    yield rt.send_email("hello")
    yield rt.wait(days=1)

config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>hi</p>"}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["all"], "behavior": "static", "flow": hello}},
}
"""
        )
    )
    from campaigns.runner import advance_cursors

    outcome = advance_cursors(
        list(Cursor.objects.values_list("pk", flat=True)), live_config.current()
    )
    assert sorted(outcome.values()).count("waiting") == 9
    assert sorted(sent()) == ["hello"] * 9
    assert sent("u004") == []
    assert Cursor.objects.get(user_id="u004").step_count == 0  # its lease hands it out again


def test_a_suppressed_address_blocks_only_the_rows_sent_to_it(write_config, pushed, clock):
    pushed(write_config(CONFIG))
    make_users(1)
    rows = [
        OutboxEmail.objects.create(
            key=f"test:{address}", user_id="u000", to_address=address,
            subject="Hi", html="<p>hi</p>", text="hi",
        )
        for address in ("old@example.com", "new@example.com")
    ]  # fmt: skip
    Suppression.objects.create(address="old@example.com", reason=Suppression.Reason.HARD_BOUNCE)
    outcome = deliver_emails([r.pk for r in rows], live_config.current())
    assert outcome == {rows[0].pk: "skipped", rows[1].pk: "sent"}
    assert [m.to for m in mail.outbox] == [["new@example.com"]]


def test_fifty_users_without_an_address_are_one_line_in_the_log(
    write_config, pushed, clock, caplog, settings
):
    settings.SEGFLOW_WAIT_FOR_ADDRESS_SECONDS = 0  # skip at once, rather than wait for one
    User.objects.bulk_create(
        User(id=f"n{n:03}", attributes={}, evaluation_pending=False) for n in range(50)
    )
    pushed(write_config(CONFIG))
    with caplog.at_level("INFO", logger="delivery.outbox"):
        tick()
    assert sent(status="skipped") == ["hello"] * 50
    lines = [r.getMessage() for r in caplog.records if r.name == "delivery.outbox"]
    assert lines == [
        "50 email(s) skipped: the user has no email address (set the attribute `email`)"
    ]
