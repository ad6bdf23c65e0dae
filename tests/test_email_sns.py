"""The Amazon SES webhook believes only messages that Amazon SNS signed.

The shared secret alone let anyone who learnt it (a leaked URL, a proxy log) post bounces and
complaints. Now each SNS message's signature (SignatureVersion 1 or 2) is checked against the
certificate at its SigningCertURL, which must be an https URL on an Amazon SNS host. The tests
sign with their own key, and the certificate fetch serves its certificate (tests/email_support.py):
no test reaches Amazon, and the host check runs all the same.
"""

from __future__ import annotations

import json

import pytest

from delivery import sns
from delivery.models import OutboxEmail, Suppression
from segflow.models import Event

from .email_support import (
    EMAILS,
    POSTMARK,
    SNS_CERT_URL,
    SNS_SIGNER,
    SNS_TOPIC_ARN,
    WEBHOOK_SECRET,
    SnsSigner,
    basic_auth,
    email_config,
    put_user,
)
from .email_support import postmark as postmark  # noqa: F401 - the fixture
from .email_support import sns_certificates as sns_certificates  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)

SES_URL = "/webhooks/amazon_ses/tracking/"
SES_ID = "0102018e2c7f3d1e-5f6b8a9c-1d2e-4f3a-9b8c-7d6e5f4a3b2c-000000"


@pytest.fixture(autouse=True)
def _amazon_certificate(sns_certificates):  # noqa: F811
    return sns_certificates


@pytest.fixture
def sent(api, clock, write_config, pushed, postmark, settings):  # noqa: F811
    """Jane got the welcome email, recorded as sent through SES as message SES_ID."""
    settings.SEGFLOW_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_SECRET}
    pushed(write_config(email_config(POSTMARK), EMAILS))
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = OutboxEmail.objects.get(template_name="welcome")
    OutboxEmail.objects.filter(pk=row.pk).update(message_id=SES_ID, provider="amazon_ses")
    return row


def bounce(recipient: str = "jane@example.com") -> dict:
    return {
        "eventType": "Bounce",
        "mail": {"messageId": SES_ID, "destination": [recipient], "headers": []},
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": recipient, "diagnosticCode": "smtp; 550"}],
            "timestamp": "2026-03-02T09:00:04.000Z",
        },
    }


def notification(message: dict | str, **fields) -> dict:
    return {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": SNS_TOPIC_ARN,
        "Subject": "Amazon SES Email Event Notification",
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2026-03-02T09:05:00.000Z",
        **fields,
    }


def post(client, payload):
    return client.post(
        SES_URL,
        json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic_auth(WEBHOOK_SECRET),
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=payload.get("Type", ""),
        HTTP_X_AMZ_SNS_MESSAGE_ID=payload.get("MessageId", ""),
    )


def nothing_changed(row: OutboxEmail) -> bool:
    row.refresh_from_db()
    return (
        not Suppression.objects.exists()
        and not Event.objects.filter(name__startswith="email.").exists()
        and row.bounced_at is None
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_message_amazon_signed_is_taken(client, sent, sns_certificates, version):  # noqa: F811
    response = post(client, SNS_SIGNER.sign(notification(bounce()), version=version))
    assert response.status_code == 200, response.content
    assert Suppression.objects.get().address == "jane@example.com"
    assert Event.objects.filter(name="email.bounced").count() == 1
    assert sns_certificates.fetched == [SNS_CERT_URL]


def test_the_certificate_is_fetched_once(client, sent, sns_certificates):  # noqa: F811
    for n in range(3):
        payload = SNS_SIGNER.sign(notification(bounce(), MessageId=f"m-{n}"))
        assert post(client, payload).status_code == 200
    assert sns_certificates.fetched == [SNS_CERT_URL]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda m: notification(bounce()), id="no signature"),
        pytest.param(
            lambda m: {
                **notification(bounce()),
                "SignatureVersion": "1",
                "Signature": "EXAMPLE",
                "SigningCertURL": SNS_CERT_URL,
            },
            id="not base64",
        ),
        pytest.param(lambda m: SnsSigner().sign(notification(bounce())), id="another key"),
        pytest.param(lambda m: {**m, "Message": json.dumps(bounce("ceo@corp.test"))}, id="changed"),
        pytest.param(lambda m: {**m, "Subject": "Something else"}, id="subject changed"),
        pytest.param(lambda m: {**m, "SignatureVersion": "2"}, id="other version"),
        pytest.param(lambda m: {**m, "SignatureVersion": "3"}, id="unknown version"),
        pytest.param(lambda m: {k: v for k, v in m.items() if k != "Timestamp"}, id="unsigned"),
    ],
)
def test_a_message_amazon_did_not_sign_is_refused_and_changes_nothing(client, sent, forge):
    payload = forge(SNS_SIGNER.sign(notification(bounce())))
    response = post(client, payload)
    assert response.status_code == 400, response.content
    assert nothing_changed(sent)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "https://127.0.0.1/SimpleNotificationService-0000.pem",
        "https://evil.test/SimpleNotificationService-0000.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.test/SimpleNotificationService-0000.pem",
        "https://evil.test/sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.test/SimpleNotificationService-0000.pem",
        "https://x@sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-0000.pem",
        "https://s3.amazonaws.com/SimpleNotificationService-0000.pem",
        "https://sns.eu-west-1.amazonaws.com/not-a-certificate",
        "file:///etc/ssl/certs/ca-certificates.crt",
    ],
)
def test_a_certificate_anywhere_but_amazon_sns_is_never_fetched(
    client,
    sent,
    sns_certificates,  # noqa: F811
    url,
):
    sns_certificates.served[url] = SNS_SIGNER.pem  # were it fetched, the signature would pass
    response = post(client, SNS_SIGNER.sign(notification(bounce()), version="2") | {
        "SigningCertURL": url})  # fmt: skip
    assert response.status_code == 400
    assert "SigningCertURL" in response.json()["error"]
    assert sns_certificates.fetched == []
    assert nothing_changed(sent)


def test_the_certificate_urls_of_every_amazon_region_are_taken():
    for url in (
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a1b2.pem",
        "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-a1b2.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-a1b2.pem",
        "https://sns.us-gov-west-1.amazonaws.com:443/SimpleNotificationService-a1b2.pem",
    ):
        assert sns._certificate_url(url) == url


def test_only_the_allowed_topics_are_taken(client, sent, settings):
    settings.SEGFLOW_SES_ALLOWED_TOPIC_ARNS = ["arn:aws:sns:eu-west-1:123456789012:other"]
    response = post(client, SNS_SIGNER.sign(notification(bounce())))
    assert response.status_code == 400
    assert "SEGFLOW_SES_ALLOWED_TOPIC_ARNS" in response.json()["error"]
    assert nothing_changed(sent)

    settings.SEGFLOW_SES_ALLOWED_TOPIC_ARNS = [SNS_TOPIC_ARN]
    assert post(client, SNS_SIGNER.sign(notification(bounce()))).status_code == 200
    assert Suppression.objects.get().address == "jane@example.com"


def test_a_certificate_that_cannot_be_fetched_now_is_a_503_sns_retries(
    client,
    sent,
    sns_certificates,  # noqa: F811
):
    del sns_certificates.served[SNS_CERT_URL]
    response = post(client, SNS_SIGNER.sign(notification(bounce())))
    assert response.status_code == 503 and response["Retry-After"] == "60"
    assert nothing_changed(sent)


def test_a_certificate_that_is_not_one_is_refused(client, sent, sns_certificates):  # noqa: F811
    sns_certificates.served[SNS_CERT_URL] = b"<html>Not found</html>"
    response = post(client, SNS_SIGNER.sign(notification(bounce())))
    assert response.status_code == 400
    assert "no PEM certificate" in response.json()["error"]


def subscription(**fields) -> dict:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "s-1",
        "Token": "2336412f37fb687f5d51e6e2425f004aed8",
        "TopicArn": SNS_TOPIC_ARN,
        "Message": f"You have chosen to subscribe to the topic {SNS_TOPIC_ARN}.",
        "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "Timestamp": "2026-03-02T09:00:00.000Z",
        **fields,
    }


def test_a_subscription_is_confirmed_only_when_amazon_signed_it(client, sent, monkeypatch):
    confirmed = []
    monkeypatch.setattr(
        "anymail.webhooks.amazon_ses.AmazonSESTrackingWebhookView.auto_confirm_sns_subscription",
        lambda view, message: confirmed.append(message["TopicArn"]),
    )
    forged = {**subscription(), "SignatureVersion": "1", "Signature": "AAAA",
              "SigningCertURL": SNS_CERT_URL}  # fmt: skip
    assert post(client, forged).status_code == 400
    assert confirmed == []
    for version in ("1", "2"):
        assert post(client, SNS_SIGNER.sign(subscription(), version=version)).status_code == 200
    assert confirmed == [SNS_TOPIC_ARN, SNS_TOPIC_ARN]
