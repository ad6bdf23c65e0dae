"""Unsubscribing: the signed link and RFC 8058's one-click POST; campaigns stop, receipts go on."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client

from delivery.models import OutboxEmail, Unsubscription
from segflow.models import Event

from .email_support import EMAILS, email_config, emit, put_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def welcomed(api, clock, write_config, pushed):
    """Jane got the campaign's welcome email (through Django's locmem backend)."""
    pushed(write_config(email_config('{"name": "django"}'), EMAILS))
    put_user(api, "jane", email="jane@example.com", name="Jane")
    [message] = mail.outbox
    return message


def link_path(message) -> str:
    url = message.extra_headers["List-Unsubscribe"].strip("<>")
    return urlsplit(url).path


def test_every_campaign_email_carries_the_link_and_the_one_click_headers(welcomed):
    row = OutboxEmail.objects.get(template_name="welcome")
    assert welcomed.extra_headers == {
        "List-Unsubscribe": f"<{row.unsubscribe_url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert f'href="{row.unsubscribe_url}"' in welcomed.alternatives[0][0]
    assert row.unsubscribe_url in welcomed.body


def test_a_template_without_a_link_gets_one_in_a_footer(api, clock, write_config, pushed):
    emails = {**EMAILS, "emails/welcome.html": "<p>Hi {{ user.name }}</p>"}
    pushed(write_config(email_config('{"name": "django"}'), emails))
    put_user(api, "jane", email="jane@example.com", name="Jane")
    row = OutboxEmail.objects.get(template_name="welcome")
    assert row.html.startswith("<p>Hi Jane</p>")
    assert f'<a href="{row.unsubscribe_url}"' in row.html and "Unsubscribe" in row.html


def test_following_the_link_unsubscribes_and_records_an_event(client, welcomed):
    response = client.get(link_path(welcomed))
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    unsubscription = Unsubscription.objects.get(user_id="jane")
    assert unsubscription.method == "link"
    row = OutboxEmail.objects.get(template_name="welcome")
    assert list(Event.objects.filter(name="unsubscribed").values_list("attributes", flat=True)) == [
        {"method": "link", "outbox_id": row.pk, "template": "welcome", "campaign": "drip"}
    ]
    # Following it again shows the same page and records nothing more.
    assert client.get(link_path(welcomed)).status_code == 200
    assert Event.objects.filter(name="unsubscribed").count() == 1


def test_the_one_click_post_unsubscribes_without_a_csrf_token(welcomed):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        link_path(welcomed),
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert Unsubscription.objects.get(user_id="jane").method == "one_click"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # the signature
        lambda token: "eyJ1IjoibWFsbG9yeSJ9" + token[token.index(":") :],  # another user
        lambda token: token[:20],  # cut short
    ],
)
def test_a_tampered_token_gets_a_400_and_changes_nothing(client, welcomed, tamper):
    token = link_path(welcomed).rstrip("/").rsplit("/", 1)[1]
    response = client.get(f"/unsubscribe/{tamper(token)}/")
    assert response.status_code == 400
    assert "not valid" in response.content.decode()
    assert not Unsubscription.objects.exists()
    assert not Event.objects.filter(name="unsubscribed").exists()


def test_a_link_for_a_deleted_user_gets_a_404(api, client, welcomed):
    assert api.delete("/api/users/jane").status_code == 204
    assert client.get(link_path(welcomed)).status_code == 404


def test_campaigns_skip_an_unsubscribed_user_and_transactions_still_go(
    api, client, clock, welcomed
):
    client.get(link_path(welcomed))
    mail.outbox.clear()

    clock.advance_and_tick(days=1)  # the campaign's next step
    tips = OutboxEmail.objects.get(template_name="tips")
    assert tips.status == OutboxEmail.Status.SKIPPED
    assert tips.reason.startswith("the user unsubscribed on 2026-03-02")
    assert mail.outbox == []

    emit(api, "jane", "purchase", orderId="ord_7")
    assert [m.subject for m in mail.outbox] == ["Your receipt"]
    assert "List-Unsubscribe" not in mail.outbox[0].extra_headers
