"""End to end: a campaign through (fake) Postmark, a bounce webhook, and no second email."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from delivery.models import OutboxEmail
from segflow.models import Event

from .email_support import (
    EMAILS,
    POSTMARK,
    WEBHOOK_SECRET,
    basic_auth,
    email_config,
    emit,
    put_user,
)
from .email_support import postmark as postmark  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


def test_after_a_hard_bounce_the_address_gets_no_second_email(
    api,
    client,
    clock,
    write_config,
    pushed,
    postmark,  # noqa: F811
    settings,
):
    settings.SEGFLOW_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_SECRET}
    pushed(write_config(email_config(POSTMARK), EMAILS))

    put_user(api, "jane", email="Jane@Example.com", name="Jane")
    put_user(api, "sam", email="sam@example.com", name="Sam")
    # Sent to the one normalised address: the form suppressions are kept in.
    assert sorted(body["To"] for body in postmark.emails) == ["jane@example.com", "sam@example.com"]
    welcome = OutboxEmail.objects.get(user_id="jane", template_name="welcome")

    # Postmark reports Jane's address bounced (it writes addresses in lower case).
    bounce = {
        "RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1,
        "Name": "Hard bounce", "MessageID": welcome.message_id, "MessageStream": "news",
        "Description": "Unknown user", "Details": "smtp;550 5.1.1 unknown user",
        "Email": "jane@example.com", "From": "hello@acme.test",
        "BouncedAt": "2026-03-02T09:00:10Z", "Inactive": True, "CanActivate": True,
        "Subject": "Welcome Jane!", "Metadata": {"segflow_outbox_id": str(welcome.pk)},
    }  # fmt: skip
    response = client.post(
        "/webhooks/postmark/tracking/", json.dumps(bounce), content_type="application/json",
        HTTP_AUTHORIZATION=basic_auth(WEBHOOK_SECRET),
    )  # fmt: skip
    assert response.status_code == 200

    # A day on, the campaign's next step: Sam gets it, Jane does not; nor her receipt.
    clock.advance_and_tick(every=timedelta(hours=6), days=1)
    emit(api, "jane", "purchase", orderId="ord_1")
    assert [(b["To"], b["Subject"]) for b in postmark.emails[2:]] == [("sam@example.com", "Tips")]
    skipped = OutboxEmail.objects.filter(user_id="jane", status=OutboxEmail.Status.SKIPPED)
    assert sorted(skipped.values_list("template_name", flat=True)) == ["receipt", "tips"]
    assert all("jane@example.com is suppressed" in row.reason for row in skipped)
    # ... and the bounce is on her record, for segments to use.
    bounced = Event.objects.get(user_id="jane", name="email.bounced")
    assert bounced.attributes["outbox_id"] == welcome.pk
