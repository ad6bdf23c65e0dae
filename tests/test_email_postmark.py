"""Sending through Postmark: the exact requests anymail makes, and what each answer does to a row.

A local HTTP server stands in for Postmark's API; everything else is real.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from delivery.models import OutboxEmail, Suppression
from segflow.pipeline import tick

from .email_support import (
    EMAILS,
    POSTMARK,
    email_config,
    emit,
    put_user,
)
from .email_support import postmark as postmark  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def setup(write_config, pushed, postmark):  # noqa: F811
    def apply(provider: str = POSTMARK):
        pushed(write_config(email_config(provider), EMAILS))

    return apply


def row_for(template: str) -> OutboxEmail:
    return OutboxEmail.objects.get(template_name=template)


def test_a_campaign_email_is_the_json_postmark_expects(api, clock, setup, postmark):  # noqa: F811
    setup()
    put_user(api, "jane", email="jane@example.com", name="Jane")

    assert len(postmark.requests) == 1
    request = postmark.requests[0]
    assert request.path == "/email"
    assert request.headers["X-Postmark-Server-Token"] == "server-token-from-the-environment"
    row = row_for("welcome")
    assert row.unsubscribe_url.startswith("http://127.0.0.1:8000/unsubscribe/")
    assert request.body == {
        "From": "Acme <hello@acme.test>",
        "To": "jane@example.com",
        "Subject": "Welcome Jane!",
        "HtmlBody": row.html,
        "TextBody": row.text,
        "ReplyTo": "support@acme.test",
        "Headers": [
            {"Name": "List-Unsubscribe", "Value": f"<{row.unsubscribe_url}>"},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        ],
        "MessageStream": "news",  # campaigns go through the broadcast stream
        "Metadata": {"segflow_outbox_id": str(row.pk)},
        "Tag": "welcome",
    }
    # The HTML as people expect it: the layout, inlined CSS, the preview, the unsubscribe link.
    html = request.body["HtmlBody"]
    assert "Thanks for joining us Jane!" in html and "Acme" in html
    assert 'style="background: #2563eb;color: #ffffff;"' in html
    assert "@media (max-width: 480px)" in html  # kept in a <style> block: it cannot be inlined
    assert "Welcome aboard!" in html
    assert f'href="{row.unsubscribe_url}"' in html
    text = request.body["TextBody"]
    assert "Thanks for joining us Jane!" in text and "https://example.com/start" in text
    assert "Welcome aboard!" not in text  # the hidden preview is no part of the text
    assert row.unsubscribe_url in text

    assert row.status == OutboxEmail.Status.SENT
    assert row.attempts == 1 and row.provider == "postmark"


def test_the_row_keeps_postmarks_message_id(api, clock, setup, postmark):  # noqa: F811
    setup()
    postmark.answer(
        200,
        {
            "To": "jane@example.com",
            "SubmittedAt": "2026-03-02T09:00:00Z",
            "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
            "ErrorCode": 0,
            "Message": "OK",
        },
    )
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = row_for("welcome")
    assert (row.status, row.message_id) == ("sent", "b7bc2f4a-e38e-4336-af7d-e6c392c2f817")


def test_a_transactional_email_has_no_unsubscribe_and_uses_the_outbound_stream(
    api,
    clock,
    setup,
    postmark,  # noqa: F811
):
    setup()
    put_user(api, "jane", email="jane@example.com", name="Jane")
    emit(api, "jane", "purchase", orderId="ord_123")

    body = postmark.emails[-1]
    assert body["Subject"] == "Your receipt"
    assert body["MessageStream"] == "outbound"
    assert "Headers" not in body
    assert "Order ord_123 confirmed." in body["HtmlBody"]
    assert "unsubscribe" not in body["HtmlBody"].lower()


def test_api_key_in_the_config_still_works(api, clock, setup, postmark):  # noqa: F811
    setup('{"name": "postmark", "api_key": "token-in-the-config"}')
    put_user(api, "jane", email="jane@example.com", name="Jane")
    request = postmark.requests[0]
    assert request.headers["X-Postmark-Server-Token"] == "token-in-the-config"
    assert "MessageStream" not in request.body  # none named: Postmark's default stream


INACTIVE = {
    "ErrorCode": 406,
    "Message": "You tried to send to recipient(s) that have been marked as inactive.\n"
    "Found inactive addresses: jane@example.com.\n"
    "Inactive recipients are ones that have generated a hard bounce, a spam complaint, "
    "or a manual suppression.",
}


def test_an_inactive_recipient_fails_at_once_and_the_address_is_suppressed(
    api,
    clock,
    setup,
    postmark,  # noqa: F811
):
    setup()
    postmark.answer(422, INACTIVE)
    put_user(api, "jane", email="jane@example.com", name="Jane")

    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.FAILED
    assert "AnymailRecipientsRefused" in row.reason
    assert row.next_attempt_at is None
    suppression = Suppression.objects.get(address="jane@example.com")
    assert suppression.reason == Suppression.Reason.INACTIVE

    # Not retried, and nothing more goes to the address: not the next step, not a receipt.
    clock.advance_and_tick(days=2)
    emit(api, "jane", "purchase", orderId="ord_1")
    assert len(postmark.requests) == 1
    assert row_for("tips").status == OutboxEmail.Status.SKIPPED
    receipt = row_for("receipt")
    assert receipt.status == OutboxEmail.Status.SKIPPED
    assert "jane@example.com is suppressed" in receipt.reason


def test_an_invalid_request_fails_without_retry(api, clock, setup, postmark):  # noqa: F811
    setup()
    postmark.answer(422, {"ErrorCode": 300, "Message": "Invalid 'From' address: 'nope'."})
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.FAILED and "Invalid 'From' address" in row.reason
    clock.advance_and_tick(hours=2)
    assert len(postmark.requests) == 1
    assert not Suppression.objects.exists()  # the sender was wrong, not the address


def test_a_server_error_is_retried_by_the_sweep_with_backoff(api, clock, setup, postmark):  # noqa: F811
    setup()
    postmark.answer(500, {"ErrorCode": 100, "Message": "Internal server error"})
    postmark.answer(503, {"ErrorCode": 100, "Message": "Service unavailable"})
    put_user(api, "jane", email="jane@example.com", name="Jane")

    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.QUEUED and row.attempts == 1
    assert row.next_attempt_at == clock.now + timedelta(seconds=60)
    assert "attempt 1 failed" in row.reason and "500" in row.reason

    clock.advance(seconds=59)
    tick()
    assert len(postmark.requests) == 1  # not due yet
    clock.advance(seconds=1)
    tick()
    assert len(postmark.requests) == 2
    row.refresh_from_db()
    assert row.attempts == 2 and row.next_attempt_at == clock.now + timedelta(seconds=120)

    clock.advance(seconds=120)
    tick()
    row.refresh_from_db()
    assert row.status == OutboxEmail.Status.SENT and row.attempts == 3 and row.reason == ""
    # Three calls, one email: each carried the same message.
    assert len(postmark.requests) == 3
    assert len({r.body["HtmlBody"] for r in postmark.requests}) == 1


def test_a_rate_limit_waits_as_long_as_postmark_asks(api, clock, setup, postmark):  # noqa: F811
    setup()
    postmark.answer(
        429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, **{"Retry-After": "300"}
    )
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = row_for("welcome")
    assert row.next_attempt_at == clock.now + timedelta(seconds=300)


def test_retries_give_up_after_the_last_attempt(api, clock, setup, postmark, settings):  # noqa: F811
    settings.SEGFLOW_EMAIL_MAX_ATTEMPTS = 2
    setup()
    for _ in range(3):
        postmark.answer(502, {"ErrorCode": 100, "Message": "Bad gateway"})
    put_user(api, "jane", email="jane@example.com", name="Jane")
    clock.advance_and_tick(hours=3, every=timedelta(minutes=1))
    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.FAILED
    assert row.reason.startswith("gave up after 2 attempts")
    assert len(postmark.requests) == 2


def test_no_connection_is_retried_because_nothing_was_sent(
    api,
    clock,
    setup,
    postmark,  # noqa: F811
    settings,
):
    setup()
    real_url = settings.ANYMAIL["POSTMARK_API_URL"]
    settings.ANYMAIL = {**settings.ANYMAIL, "POSTMARK_API_URL": "http://127.0.0.1:9/"}  # closed
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.QUEUED and "ConnectionError" in row.reason

    settings.ANYMAIL = {**settings.ANYMAIL, "POSTMARK_API_URL": real_url}
    clock.advance_and_tick(minutes=1)
    row.refresh_from_db()
    assert row.status == OutboxEmail.Status.SENT
    assert len(postmark.requests) == 1


def test_a_response_slower_than_the_timeout_is_never_sent_twice(
    api,
    clock,
    setup,
    postmark,  # noqa: F811
):
    setup()
    postmark.answer(
        200,
        {"To": "jane@example.com", "MessageID": "late-1", "ErrorCode": 0, "Message": "OK"},
        delay=1.5,
    )
    put_user(api, "jane", email="jane@example.com", name="Jane")

    # Postmark got the request and may well send it; segflow cannot know, so it does not retry.
    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.UNKNOWN
    assert "ReadTimeout" in row.reason and "not sent again" in row.reason
    clock.advance_and_tick(hours=6, every=timedelta(minutes=30))
    assert len(postmark.requests) == 1
    row.refresh_from_db()
    assert row.status == OutboxEmail.Status.UNKNOWN


def test_an_unsubscribe_while_a_retry_waits_stops_the_retry(api, client, clock, setup, postmark):  # noqa: F811
    setup()
    postmark.answer(500, {"ErrorCode": 100, "Message": "Internal server error"})
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.QUEUED

    path = row.unsubscribe_url.removeprefix("http://127.0.0.1:8000")
    form = "application/x-www-form-urlencoded"
    response = client.post(path, "List-Unsubscribe=One-Click", content_type=form)
    assert response.status_code == 200
    clock.advance_and_tick(minutes=5)
    row.refresh_from_db()
    assert row.status == OutboxEmail.Status.SKIPPED and "unsubscribed" in row.reason
    assert len(postmark.requests) == 1


def test_a_superuser_can_send_an_unknown_email_again_from_the_admin(
    api,
    admin_client,
    clock,
    setup,
    postmark,  # noqa: F811
):
    setup()
    postmark.answer(200, {"MessageID": "late", "ErrorCode": 0, "Message": "OK"}, delay=1.5)
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = row_for("welcome")
    assert row.status == OutboxEmail.Status.UNKNOWN

    response = admin_client.post(
        reverse("admin:delivery_outboxemail_changelist"),
        {"action": "send_again", "_selected_action": [row.pk]},
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.status == OutboxEmail.Status.SENT and row.attempts == 2
    assert len(postmark.requests) == 2


def test_the_senders_address_parsed_once_is_still_each_messages_own():
    # The sender's address is parsed once per process; every message still says its own, and a
    # bad one is refused every time, naming the field.
    from anymail.exceptions import AnymailInvalidAddress
    from django.core.mail import EmailMessage

    from delivery.providers.postmark import PostmarkBackend

    backend = PostmarkBackend(server_token="token")

    def payload(sender: str, reply_to: list[str]) -> dict:
        message = EmailMessage("Hi", "Hello", sender, ["ann@example.com"], reply_to=reply_to)
        return backend.build_message_payload(message, backend.send_defaults).data

    for _ in range(2):
        first = payload('"Acme, Inc." <hello@acme.test>', ["help@acme.test"])
        assert (first["From"], first["ReplyTo"]) == (
            '"Acme, Inc." <hello@acme.test>',
            "help@acme.test",
        )
        other = payload("Other <other@acme.test>", [])
        assert other["From"] == "Other <other@acme.test>" and "ReplyTo" not in other
        with pytest.raises(AnymailInvalidAddress, match="from_email"):
            payload("not an address", [])
