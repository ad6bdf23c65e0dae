"""Cursors are advanced, and emails delivered, in batches: a batch behaves as its members would
one by one, a bad member harms only itself, and a batch never sends anything twice."""

import pytest
from django.core import mail

from campaigns.models import Cursor
from delivery.models import Suppression, Unsubscription
from segflow.config import get_config
from segflow.models import OutboxEmail, User
from segflow.outbox import deliver_emails
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

    outcome = deliver_emails([r.pk for r in rows], get_config())

    assert outcome == {
        rows[0].pk: "sent",
        rows[1].pk: "skipped",  # suppressed address
        rows[2].pk: "skipped",  # unsubscribed: campaign email no longer goes
        rows[3].pk: "sending",  # another sender holds it
        rows[4].pk: "sent",
        rows[5].pk: "skipped",  # the same suppressed address, written differently
    }
    assert "U001@Example.com is suppressed" in OutboxEmail.objects.get(pk=rows[5].pk).reason
    assert "unsubscribed" in OutboxEmail.objects.get(pk=rows[2].pk).reason
    assert sorted(m.to[0] for m in mail.outbox) == ["u000@example.com", "u004@example.com"]

    assert deliver_emails([r.pk for r in rows], get_config())[rows[0].pk] == "sent"
    assert len(mail.outbox) == 2  # a second delivery of the same batch sends nothing
