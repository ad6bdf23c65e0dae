"""Tracking webhooks: the providers' own payloads (from their documentation) become events on the
user, update the outbox row, and suppress addresses that bounced hard or complained."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from delivery.models import OutboxEmail, Suppression, Unsubscription
from segflow.models import Event
from segflow.pipeline import tick

from .email_support import (
    EMAILS,
    POSTMARK,
    SNS_SIGNER,
    SNS_TOPIC_ARN,
    WEBHOOK_SECRET,
    basic_auth,
    email_config,
    emit,
    put_user,
)
from .email_support import postmark as postmark  # noqa: F401 - the fixture
from .email_support import sns_certificates as sns_certificates  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"
POSTMARK_URL = "/webhooks/postmark/tracking/"
SES_URL = "/webhooks/amazon_ses/tracking/"

OPENERS = (
    '"segments": {"openers": {"sql": "SELECT e.user_id AS id FROM events e '
    "WHERE e.name = 'email.opened'\"}, "
)


@pytest.fixture
def sent_welcome(api, clock, write_config, pushed, postmark, settings):  # noqa: F811
    """Jane got the campaign's welcome email through (fake) Postmark, as message MESSAGE_ID."""
    settings.SEGFLOW_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_SECRET}
    config = email_config(POSTMARK).replace('"segments": {', OPENERS, 1)
    pushed(write_config(config, EMAILS))
    postmark.answer(200, {"To": "jane@example.com", "MessageID": MESSAGE_ID, "ErrorCode": 0,
                          "Message": "OK"})  # fmt: skip
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = OutboxEmail.objects.get(template_name="welcome")
    assert row.message_id == MESSAGE_ID
    return row


def post(client, url, payload, secret=WEBHOOK_SECRET, **headers):
    if secret:
        headers["HTTP_AUTHORIZATION"] = basic_auth(secret)
    return client.post(url, json.dumps(payload), content_type="application/json", **headers)


def events(name: str) -> list[dict]:
    return list(Event.objects.filter(name=name).order_by("id").values_list("attributes", flat=True))


# Postmark's webhook payloads, as its documentation shows them.


def postmark_delivery(**changes):
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "broadcast",
        "MessageID": MESSAGE_ID,
        "Recipient": "jane@example.com",
        "Tag": "welcome",
        "DeliveredAt": "2026-03-02T09:00:05Z",
        "Details": "smtp;250 2.0.0 OK",
        "Metadata": {},
        **changes,
    }


def postmark_bounce(**changes):
    return {
        "RecordType": "Bounce",
        "MessageStream": "broadcast",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "welcome",
        "MessageID": MESSAGE_ID,
        "Metadata": {},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, "
        "mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "jane@example.com",
        "From": "hello@acme.test",
        "BouncedAt": "2026-03-02T09:00:07Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Welcome Jane!",
        **changes,
    }


def postmark_open(**changes):
    return {
        "RecordType": "Open",
        "MessageStream": "broadcast",
        "Metadata": {},
        "FirstOpen": True,
        "Recipient": "jane@example.com",
        "MessageID": MESSAGE_ID,
        "ReceivedAt": "2026-03-02T09:10:00Z",
        "Platform": "WebMail",
        "ReadSeconds": 5,
        "Tag": "welcome",
        "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        "OS": {"Name": "Windows 10", "Family": "Windows", "Company": "Microsoft Corporation"},
        "Client": {"Name": "Chrome 120", "Family": "Chrome", "Company": "Google"},
        "Geo": {"CountryISOCode": "FR", "Country": "France", "City": "Paris"},
        **changes,
    }


def postmark_click(**changes):
    return {
        "RecordType": "Click",
        "MessageStream": "broadcast",
        "ClickLocation": "HTML",
        "Client": {"Name": "Chrome 120", "Family": "Chrome", "Company": "Google"},
        "OS": {"Name": "Windows 10", "Family": "Windows", "Company": "Microsoft Corporation"},
        "Platform": "Desktop",
        "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        "OriginalLink": "https://example.com/start",
        "Geo": {"CountryISOCode": "FR", "Country": "France", "City": "Paris"},
        "MessageID": MESSAGE_ID,
        "Metadata": {},
        "ReceivedAt": "2026-03-02T09:11:00Z",
        "Tag": "welcome",
        "Recipient": "jane@example.com",
        **changes,
    }


def test_webhooks_are_turned_off_without_a_secret(client, sent_welcome, settings):
    settings.SEGFLOW_WEBHOOK_SECRET = ""
    response = post(client, POSTMARK_URL, postmark_bounce())
    assert response.status_code == 403
    assert "SEGFLOW_WEBHOOK_SECRET" in response.json()["error"]
    assert not Suppression.objects.exists() and events("email.bounced") == []


@pytest.mark.parametrize("secret", [None, "segflow:wrong", "intruder:hook-secret"])
def test_a_wrong_secret_is_refused_and_changes_nothing(client, sent_welcome, secret):
    response = post(client, POSTMARK_URL, postmark_bounce(), secret=secret)
    assert response.status_code == 400
    assert "basic auth" in response.json()["error"]
    assert not Suppression.objects.exists() and events("email.bounced") == []
    sent_welcome.refresh_from_db()
    assert sent_welcome.bounced_at is None


def test_a_body_that_is_not_json_gets_a_400(client, sent_welcome):
    response = client.post(
        POSTMARK_URL, "{not json", content_type="application/json",
        HTTP_AUTHORIZATION=basic_auth(WEBHOOK_SECRET),
    )  # fmt: skip
    assert response.status_code == 400


def test_a_delivery_is_an_event_on_the_user_and_a_retried_webhook_counts_once(client, sent_welcome):
    assert post(client, POSTMARK_URL, postmark_delivery()).status_code == 200
    assert post(client, POSTMARK_URL, postmark_delivery()).status_code == 200  # Postmark retried

    [delivered] = events("email.delivered")
    assert delivered == {
        "outbox_id": sent_welcome.pk,
        "message_id": MESSAGE_ID,
        "recipient": "jane@example.com",
        "template": "welcome",
        "campaign": "drip",
        "provider": "postmark",
        "details": "smtp;250 2.0.0 OK",
        "occurred_at": "2026-03-02T09:00:05+00:00",
    }
    assert Event.objects.get(name="email.delivered").user_id == "jane"
    sent_welcome.refresh_from_db()
    assert sent_welcome.delivered_at.isoformat() == "2026-03-02T09:00:05+00:00"


def test_a_hard_bounce_suppresses_the_address_for_all_email(api, client, clock, sent_welcome):
    assert post(client, POSTMARK_URL, postmark_bounce()).status_code == 200

    [bounced] = events("email.bounced")
    assert bounced["details"].startswith("smtp;550 5.1.1")
    suppression = Suppression.objects.get()
    assert (suppression.address, suppression.reason) == ("jane@example.com", "hard_bounce")
    sent_welcome.refresh_from_db()
    assert sent_welcome.bounced_at is not None
    assert "550 5.1.1" in sent_welcome.feedback

    # Transactional email does not go either.
    emit(api, "jane", "purchase", orderId="ord_1")
    receipt = OutboxEmail.objects.get(template_name="receipt")
    assert receipt.status == OutboxEmail.Status.SKIPPED
    assert "suppressed" in receipt.reason and "hard bounce" in receipt.reason


def test_a_soft_bounce_is_deferred_and_suppresses_nothing(client, sent_welcome):
    payload = postmark_bounce(
        Type="SoftBounce",
        TypeCode=4096,
        Inactive=False,
        Description="The server could not temporarily deliver your message",
    )
    assert post(client, POSTMARK_URL, payload).status_code == 200
    assert [e["description"] for e in events("email.deferred")] == [
        "The server could not temporarily deliver your message"
    ]
    assert events("email.bounced") == [] and not Suppression.objects.exists()


def test_a_spam_complaint_suppresses_the_address(client, sent_welcome):
    payload = postmark_bounce(
        RecordType="SpamComplaint", Type="SpamComplaint", TypeCode=512, Name="Spam complaint",
        Description="The subscriber explicitly marked this message as spam.", Details="",
    )  # fmt: skip
    assert post(client, POSTMARK_URL, payload).status_code == 200
    assert len(events("email.complained")) == 1
    assert Suppression.objects.get().reason == Suppression.Reason.COMPLAINT
    sent_welcome.refresh_from_db()
    assert sent_welcome.complained_at is not None


def test_opens_and_clicks_are_events_that_segments_use(api, client, sent_welcome):
    assert "openers" not in api.get("/api/users/jane").json()["segments"]

    post(client, POSTMARK_URL, postmark_open())
    post(client, POSTMARK_URL, postmark_open(ReceivedAt="2026-03-02T10:00:00Z", FirstOpen=False))
    post(client, POSTMARK_URL, postmark_click())

    assert len(events("email.opened")) == 2  # every open counts
    [click] = events("email.clicked")
    assert click["url"] == "https://example.com/start"
    sent_welcome.refresh_from_db()
    assert sent_welcome.opened_at.isoformat() == "2026-03-02T09:10:00+00:00"  # the first
    assert sent_welcome.clicked_at is not None
    assert "openers" in api.get("/api/users/jane").json()["segments"]


def test_an_unsubscribe_at_postmark_unsubscribes_the_user(client, sent_welcome):
    payload = {
        "RecordType": "SubscriptionChange",
        "MessageID": MESSAGE_ID,
        "ServerID": 23,
        "MessageStream": "broadcast",
        "ChangedAt": "2026-03-02T09:20:00Z",
        "Recipient": "jane@example.com",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Tag": "welcome",
        "Metadata": {},
    }
    assert post(client, POSTMARK_URL, payload).status_code == 200
    assert Unsubscription.objects.get().method == Unsubscription.Method.PROVIDER
    assert events("unsubscribed") == [
        {"method": "provider", "outbox_id": sent_welcome.pk, "template": "welcome",
         "campaign": "drip"}
    ]  # fmt: skip


def test_a_row_a_dead_sender_left_in_sending_is_reconciled_not_resent(
    client,
    clock,
    sent_welcome,
    postmark,  # noqa: F811
    settings,
):
    # Postmark took the email, then the worker died before it could record that: the row is
    # left as the claim made it.
    OutboxEmail.objects.filter(pk=sent_welcome.pk).update(
        status=OutboxEmail.Status.SENDING, message_id="", sent_at=None
    )
    clock.advance(seconds=settings.SEGFLOW_EMAIL_SENDING_STALE_SECONDS - 1)
    tick()
    sent_welcome.refresh_from_db()
    assert sent_welcome.status == OutboxEmail.Status.SENDING
    clock.advance(seconds=1)
    tick()
    sent_welcome.refresh_from_db()
    assert sent_welcome.status == OutboxEmail.Status.UNKNOWN
    assert "not sent again" in sent_welcome.reason
    clock.advance_and_tick(hours=2)
    assert len(postmark.requests) == 1  # never sent a second time

    # Postmark's delivery report carries the outbox id segflow sent along as metadata.
    payload = postmark_delivery(Metadata={"segflow_outbox_id": str(sent_welcome.pk)})
    assert post(client, POSTMARK_URL, payload).status_code == 200
    sent_welcome.refresh_from_db()
    assert sent_welcome.status == OutboxEmail.Status.SENT
    assert sent_welcome.message_id == MESSAGE_ID and sent_welcome.delivered_at is not None
    assert sent_welcome.reason.startswith("reconciled:")
    assert len(events("email.delivered")) == 1


# Amazon SES: event publishing to an SNS topic, which posts to the webhook.


@pytest.fixture(autouse=True)
def _amazon_certificate(sns_certificates):  # noqa: F811
    """SNS messages are signed (by the tests' own key, whose certificate the fetch serves)."""
    return sns_certificates


def sns(message: dict, message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324") -> dict:
    return SNS_SIGNER.sign(
        {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": SNS_TOPIC_ARN,
            "Subject": "Amazon SES Email Event Notification",
            "Message": json.dumps(message),
            "Timestamp": "2026-03-02T09:05:00.000Z",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


def ses_mail(message_id: str) -> dict:
    return {
        "timestamp": "2026-03-02T09:00:00.000Z",
        "source": "Acme <hello@acme.test>",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/hello@acme.test",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": ["jane@example.com"],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "Acme <hello@acme.test>"},
            {"name": "To", "value": "jane@example.com"},
            {"name": "Subject", "value": "Welcome Jane!"},
        ],
        "commonHeaders": {
            "from": ["Acme <hello@acme.test>"],
            "to": ["jane@example.com"],
            "messageId": message_id,
            "subject": "Welcome Jane!",
        },
        "tags": {"ses:configuration-set": ["segflow"]},
    }


def post_sns(client, payload: dict):
    return post(
        client,
        SES_URL,
        payload,
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=payload["Type"],
        HTTP_X_AMZ_SNS_MESSAGE_ID=payload["MessageId"],
    )


def test_ses_bounces_complaints_and_deliveries_through_sns(client, sent_welcome):
    ses_id = "0102018e2c7f3d1e-5f6b8a9c-1d2e-4f3a-9b8c-7d6e5f4a3b2c-000000"
    OutboxEmail.objects.filter(pk=sent_welcome.pk).update(message_id=ses_id, provider="amazon_ses")

    delivery = {
        "eventType": "Delivery",
        "mail": ses_mail(ses_id),
        "delivery": {
            "timestamp": "2026-03-02T09:00:02.000Z",
            "processingTimeMillis": 1500,
            "recipients": ["jane@example.com"],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        },
    }
    transient = {
        "eventType": "Bounce",
        "mail": ses_mail(ses_id),
        "bounce": {
            "bounceType": "Transient",
            "bounceSubType": "MailboxFull",
            "bouncedRecipients": [{"emailAddress": "jane@example.com", "action": "failed",
                                   "status": "4.2.2", "diagnosticCode": "smtp; 452 4.2.2 full"}],
            "timestamp": "2026-03-02T09:00:03.000Z",
            "feedbackId": "0102018e2c7f3d1e-aaaa-000000",
        },
    }  # fmt: skip
    permanent = {
        "eventType": "Bounce",
        "mail": ses_mail(ses_id),
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "jane@example.com", "action": "failed",
                                   "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2026-03-02T09:00:04.000Z",
            "feedbackId": "0102018e2c7f3d1e-bbbb-000000",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
    }  # fmt: skip
    complaint = {
        "eventType": "Complaint",
        "mail": ses_mail(ses_id),
        "complaint": {
            "complainedRecipients": [{"emailAddress": "jane@example.com"}],
            "timestamp": "2026-03-02T09:30:00.000Z",
            "feedbackId": "0102018e2c7f3d1e-cccc-000000",
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-03-02T09:29:00.000Z",
        },
    }

    assert post_sns(client, sns(delivery, "m-1")).status_code == 200
    assert post_sns(client, sns(transient, "m-2")).status_code == 200
    assert not Suppression.objects.exists()
    assert post_sns(client, sns(permanent, "m-3")).status_code == 200
    assert post_sns(client, sns(complaint, "m-4")).status_code == 200

    assert [e["provider"] for e in events("email.delivered")] == ["amazon_ses"]
    assert [e["description"] for e in events("email.deferred")] == ["Transient: MailboxFull"]
    assert [e["details"] for e in events("email.bounced")] == ["smtp; 550 5.1.1 user unknown"]
    assert len(events("email.complained")) == 1
    suppression = Suppression.objects.get()  # suppressed by the bounce, once
    assert suppression.reason == "hard_bounce" and suppression.provider == "amazon_ses"


def test_an_sns_message_whose_headers_do_not_match_is_refused(client, sent_welcome):
    payload = sns({"eventType": "Delivery", "mail": ses_mail("x"), "delivery": {}})
    response = post(
        client, SES_URL, payload, HTTP_X_AMZ_SNS_MESSAGE_TYPE="Notification",
        HTTP_X_AMZ_SNS_MESSAGE_ID="another-id",
    )  # fmt: skip
    assert response.status_code == 400
    assert events("email.delivered") == []


def test_the_sweep_finds_nothing_to_resend_after_webhooks(client, clock, sent_welcome, postmark):  # noqa: F811
    post(client, POSTMARK_URL, postmark_delivery())
    clock.advance_and_tick(every=timedelta(hours=6), days=1)  # the next step: tips
    assert [r.body["Subject"] for r in postmark.requests] == ["Welcome Jane!", "Tips"]


# A report counts only for an email segflow sent, to the address it reports on.


def test_a_bounce_for_an_address_segflow_never_emailed_suppresses_nothing(client, sent_welcome):
    payload = postmark_bounce(MessageID="not-ours", Email="stranger@example.com")
    assert post(client, POSTMARK_URL, payload).status_code == 200
    complaint = postmark_bounce(
        MessageID="not-ours-either", Email="ceo@corp.test", RecordType="SpamComplaint",
        Type="SpamComplaint", TypeCode=512,
    )  # fmt: skip
    assert post(client, POSTMARK_URL, complaint).status_code == 200
    assert not Suppression.objects.exists()
    assert events("email.bounced") == [] and events("email.complained") == []


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"Email": "ceo@corp.test"}, id="our message id, another recipient"),
        pytest.param(
            {"MessageID": "unknown", "Email": "ceo@corp.test", "Metadata": {}},
            id="our outbox id, another recipient",
        ),
        pytest.param({"MessageID": "unknown", "Email": ""}, id="our outbox id, no recipient"),
        pytest.param(
            {"MessageID": "unknown", "Email": "jane@example.com, ceo@corp.test"},
            id="our outbox id, several recipients",
        ),
    ],
)
def test_a_report_naming_our_email_but_another_recipient_records_nothing(
    client, sent_welcome, changes
):
    metadata = {"segflow_outbox_id": str(sent_welcome.pk)}
    payload = postmark_bounce(**{"Metadata": metadata, **changes})
    assert post(client, POSTMARK_URL, payload).status_code == 200
    assert not Suppression.objects.exists()
    assert Event.objects.filter(name__startswith="email.").count() == 0
    sent_welcome.refresh_from_db()
    assert sent_welcome.bounced_at is None


def test_a_report_on_our_email_with_the_recipient_in_other_case_counts(client, sent_welcome):
    payload = postmark_bounce(
        MessageID="unknown", Email="Jane@Example.COM",
        Metadata={"segflow_outbox_id": str(sent_welcome.pk)},
    )  # fmt: skip
    assert post(client, POSTMARK_URL, payload).status_code == 200
    assert Suppression.objects.get().address == "jane@example.com"
    assert len(events("email.bounced")) == 1


def test_an_ses_bounce_of_another_recipient_of_our_message_suppresses_nothing(client, sent_welcome):
    ses_id = "0102018e2c7f3d1e-5f6b8a9c-1d2e-4f3a-9b8c-7d6e5f4a3b2c-000000"
    OutboxEmail.objects.filter(pk=sent_welcome.pk).update(message_id=ses_id, provider="amazon_ses")
    bounce = {
        "eventType": "Bounce",
        "mail": ses_mail(ses_id),
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "ceo@corp.test"}]},
    }  # fmt: skip
    assert post_sns(client, sns(bounce)).status_code == 200
    assert not Suppression.objects.exists() and events("email.bounced") == []


# A body that is JSON but not the provider's payload is a 400, never a 500.


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="an empty array"),
        pytest.param([postmark_bounce()], id="an array of a bounce"),
        pytest.param("Bounce", id="a string"),
        pytest.param(42, id="a number"),
        pytest.param(None, id="null"),
        pytest.param({}, id="an empty object"),
        pytest.param({k: v for k, v in postmark_bounce().items() if k != "Type"}, id="no Type"),
        pytest.param(postmark_delivery(Recipient=None), id="a delivery without Recipient"),
        pytest.param({**postmark_open(), "MessageID": None}, id="an open without MessageID"),
        pytest.param(postmark_bounce(Metadata="x"), id="metadata a string"),
        pytest.param(postmark_bounce(Metadata=[1]), id="metadata an array"),
        pytest.param(postmark_bounce(Email=42), id="a recipient that is a number"),
        pytest.param(postmark_bounce(MessageID={"x": 1}), id="a message id that is an object"),
        pytest.param(postmark_bounce(Description=["x"]), id="a description that is an array"),
        pytest.param(postmark_delivery(DeliveredAt=42), id="a time that is a number"),
    ],
)
def test_a_postmark_body_of_the_wrong_shape_is_a_400(client, sent_welcome, body):
    response = post(client, POSTMARK_URL, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert not Suppression.objects.exists()
    assert Event.objects.filter(name__startswith="email.").count() == 0


def ses_bounce_without(field: str) -> dict:
    bounce = {"bounceType": "Permanent", "bounceSubType": "General",
              "bouncedRecipients": [{"emailAddress": "jane@example.com"}]}  # fmt: skip
    del bounce[field]
    return {"eventType": "Bounce", "mail": ses_mail("x"), "bounce": bounce}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param([], id="an array"),
        pytest.param([sns({"eventType": "Delivery"})], id="an array of a message"),
        pytest.param(sns([]), id="a Message that is an array"),
        pytest.param(sns(ses_bounce_without("bounceSubType")), id="no bounceSubType"),
        pytest.param(sns(ses_bounce_without("bounceType")), id="no bounceType"),
        pytest.param(sns(ses_bounce_without("bouncedRecipients")), id="no bouncedRecipients"),
        pytest.param(
            sns({"eventType": "Complaint", "mail": ses_mail("x"), "complaint": {}}),
            id="a complaint without complainedRecipients",
        ),
        pytest.param(
            sns({"eventType": "Bounce", "mail": [], "bounce": []}), id="mail and bounce arrays"
        ),
        pytest.param(
            sns({"eventType": "Delivery", "mail": {"destination": [42]}, "delivery": {}}),
            id="a recipient that is a number",
        ),
    ],
)
def test_an_ses_body_of_the_wrong_shape_is_a_400(client, sent_welcome, payload):
    headers = payload if isinstance(payload, dict) else {"Type": "Notification", "MessageId": "m"}
    response = post(
        client, SES_URL, payload, HTTP_X_AMZ_SNS_MESSAGE_TYPE=headers["Type"],
        HTTP_X_AMZ_SNS_MESSAGE_ID=headers["MessageId"],
    )  # fmt: skip
    assert response.status_code == 400, response.content
    assert not Suppression.objects.exists()
    assert Event.objects.filter(name__startswith="email.").count() == 0
