"""Sending through Amazon SES: anymail's SES v2 backend and boto3, with moto standing in for AWS."""

from __future__ import annotations

import email
from email import policy

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from delivery.models import OutboxEmail, Suppression
from segflow import users as user_service

from .email_support import EMAILS, email_config, emit, put_user

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "eu-west-1"


@pytest.fixture
def ses(settings, monkeypatch, write_config, pushed):
    """moto's SES, with the sender verified in REGION, and the config sending through SES."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",  # the config's region must win over this
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION", raising=False)
    settings.SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND = False
    with mock_aws():
        boto3.client("ses", region_name=REGION).verify_email_identity(
            EmailAddress="hello@acme.test"
        )

        def apply(provider: str = f'{{"name": "amazon_ses", "region": "{REGION}"}}') -> None:
            pushed(write_config(email_config(provider), EMAILS))

        yield apply


def sent_messages(region: str = REGION) -> list[email.message.EmailMessage]:
    backend = ses_backends[DEFAULT_ACCOUNT_ID][region]
    return [
        email.message_from_string(m.raw_data, policy=policy.default) for m in backend.sent_messages
    ]


def parts(message: email.message.EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def test_a_campaign_email_reaches_ses_in_the_configured_region(api, clock, ses):
    ses()
    put_user(api, "jane", email="jane@example.com", name="Jane")

    assert sent_messages("us-east-1") == []
    [message] = sent_messages()
    row = OutboxEmail.objects.get(template_name="welcome")
    assert row.status == OutboxEmail.Status.SENT and row.provider == "amazon_ses"
    assert row.message_id == ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages[0].id
    assert message["From"] == "Acme <hello@acme.test>"
    assert message["To"] == "jane@example.com"
    assert message["Reply-To"] == "support@acme.test"
    assert message["Subject"] == "Welcome Jane!"
    assert message["List-Unsubscribe"].strip() == f"<{row.unsubscribe_url}>"  # (folded)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Metadata"] == f'{{"segflow_outbox_id": "{row.pk}"}}'
    text, html = parts(message)
    assert "Thanks for joining us Jane!" in text and row.unsubscribe_url in text
    assert 'style="background: #2563eb;color: #ffffff;"' in html
    assert f'href="{row.unsubscribe_url}"' in html


def test_a_transactional_email_reaches_ses_without_unsubscribe_headers(api, clock, ses):
    ses()
    put_user(api, "jane", email="jane@example.com", name="Jane")
    emit(api, "jane", "purchase", orderId="ord_9")
    receipt = sent_messages()[-1]
    assert receipt["Subject"] == "Your receipt"
    assert receipt["List-Unsubscribe"] is None
    assert "Order ord_9 confirmed." in parts(receipt)[1]


def test_a_sender_ses_refuses_fails_without_retry(api, clock, ses):
    ses(f'{{"name": "amazon_ses", "region": "{REGION}"}}'.replace(REGION, "eu-central-1"))
    put_user(api, "jane", email="jane@example.com", name="Jane")  # not verified there

    row = OutboxEmail.objects.get(template_name="welcome")
    assert row.status == OutboxEmail.Status.FAILED
    assert "MessageRejected" in row.reason and "hello@acme.test" in row.reason
    clock.advance_and_tick(hours=3)
    row.refresh_from_db()
    assert row.attempts == 1 and row.status == OutboxEmail.Status.FAILED


def destinations(region: str = REGION) -> list[list[str]]:
    """The recipients SES was asked to deliver each message to."""
    # (moto lists a recipient twice: from the request's Destination and from the To header)
    return [
        sorted(set(m.destinations)) for m in ses_backends[DEFAULT_ACCOUNT_ID][region].sent_messages
    ]


@pytest.mark.parametrize(
    "value",
    [
        "a@b.com, victim@evil.test",
        "a@b.com\r\nBcc: x@evil.test",
        "g:v5@evil.test,v6@evil.test;",
        "CEO <ceo@corp.test>",
        "other@example.com, ceo@corp.test",
    ],
)
def test_an_email_attribute_with_several_addresses_never_reaches_ses(clock, ses, value):
    """Each of these reached two recipients through SES; now none, and the row says why."""
    ses()
    Suppression.objects.create(address="ceo@corp.test", reason=Suppression.Reason.COMPLAINT)
    user_service.put_user("mallory", {"email": value, "name": "Mallory"})  # stored before

    assert destinations() == []
    row = OutboxEmail.objects.get(template_name="welcome")
    assert row.status == OutboxEmail.Status.SKIPPED and row.to_address == ""
    assert "is not one email address" in row.reason


def test_ses_gets_exactly_one_normalised_recipient(api, clock, ses):
    ses()
    Suppression.objects.create(address="ceo@corp.test", reason=Suppression.Reason.COMPLAINT)
    put_user(api, "jane", email=" Jane@Example.COM ", name="Jane")
    put_user(api, "ceo", email="CEO@corp.test", name="Boss")  # suppressed, in another case

    assert destinations() == [["jane@example.com"]]
    [message] = sent_messages()
    assert message["To"] == "jane@example.com"
    boss = OutboxEmail.objects.get(user_id="ceo")
    assert boss.status == OutboxEmail.Status.SKIPPED
    assert "ceo@corp.test is suppressed" in boss.reason
