"""Unsubscribing: the signed link shows a page, its button or RFC 8058's one-click POST
unsubscribes; campaigns stop, receipts go on."""

from __future__ import annotations

import json
import zlib
from urllib.parse import urlsplit

import pytest
from django.core import mail, signing
from django.test import Client

from delivery.models import OutboxEmail, Unsubscription
from delivery.unsubscribe import SALT, make_token
from segflow.models import Event, User

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


def test_opening_the_link_shows_a_button_and_changes_nothing(client, welcomed):
    """Mail scanners and link previews fetch every link: a GET must not unsubscribe."""
    for _ in range(3):
        response = client.get(link_path(welcomed))
        assert response.status_code == 200
        page = response.content.decode()
        assert "Unsubscribe?" in page and '<form method="post">' in page
        assert '<button type="submit"' in page
    assert not Unsubscription.objects.exists()
    assert not Event.objects.filter(name="unsubscribed").exists()


def test_the_button_on_the_page_unsubscribes_and_records_an_event(client, welcomed):
    # What a browser sends for the page's form: its button, and no CSRF token.
    client = Client(enforce_csrf_checks=True)
    response = client.post(link_path(welcomed), {"unsubscribe": "yes"})
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    unsubscription = Unsubscription.objects.get(user_id="jane")
    assert unsubscription.method == "link"
    row = OutboxEmail.objects.get(template_name="welcome")
    assert list(Event.objects.filter(name="unsubscribed").values_list("attributes", flat=True)) == [
        {"method": "link", "outbox_id": row.pk, "template": "welcome", "campaign": "drip"}
    ]
    # Posting again shows the same page and records nothing more; opening the link says so.
    assert client.post(link_path(welcomed), {"unsubscribe": "yes"}).status_code == 200
    assert Event.objects.filter(name="unsubscribed").count() == 1
    assert "You are unsubscribed" in client.get(link_path(welcomed)).content.decode()


def test_the_one_click_post_unsubscribes_without_a_csrf_token(welcomed):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        link_path(welcomed),
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert Unsubscription.objects.get(user_id="jane").method == "one_click"


def test_the_one_click_post_may_come_as_multipart_form_data(welcomed):
    response = Client(enforce_csrf_checks=True).post(
        link_path(welcomed), {"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200
    assert Unsubscription.objects.get(user_id="jane").method == "one_click"


def token_of(message) -> str:
    return link_path(message).rstrip("/").rsplit("/", 1)[1]


def payload_of(token: str) -> bytes:
    """What a token carries, as anyone who has the link can read it (it is signed, not secret)."""
    data = token.split(":", 1)[0]
    compressed = data.startswith(".")
    raw = signing.b64_decode(data.lstrip(".").encode())
    return zlib.decompress(raw) if compressed else raw


def test_a_link_does_not_tell_whose_it_is(api, clock, write_config, pushed):
    pushed(write_config(email_config('{"name": "django"}'), EMAILS))
    user_id = "customer-4815162342"
    put_user(api, user_id, email="jane@example.com", name="Jane")
    [message] = mail.outbox
    token = token_of(message)

    payload = payload_of(token)
    assert user_id.encode() not in payload and b"4815162342" not in payload
    assert user_id not in link_path(message) and "jane" not in link_path(message)
    row = OutboxEmail.objects.get()
    assert json.loads(payload)["o"] == row.key  # the email it came in, by its outbox key
    assert Client().post(link_path(message), {"unsubscribe": "yes"}).status_code == 200
    assert Unsubscription.objects.get().user_id == user_id


def legacy_token(user_id: str, outbox_key: str) -> str:
    """A token as segflow made them before: the user's id and the outbox key, signed."""
    return signing.dumps({"u": user_id, "k": outbox_key}, salt=SALT, compress=True)


def test_a_link_in_an_email_sent_before_still_works(client, welcomed):
    row = OutboxEmail.objects.get(template_name="welcome")
    path = f"/unsubscribe/{legacy_token('jane', row.key)}/"
    assert b"jane" in payload_of(legacy_token("jane", row.key))  # what the old format showed

    assert "Unsubscribe?" in client.get(path).content.decode()
    assert not Unsubscription.objects.exists()
    response = client.post(path, "List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == 200
    unsubscription = Unsubscription.objects.get()
    assert (unsubscription.user_id, unsubscription.method) == ("jane", "one_click")
    assert unsubscription.outbox_email_id == row.pk


def test_a_link_whose_email_now_belongs_to_someone_else_unsubscribes_nobody(client, welcomed):
    """The token binds its user too: were an outbox key ever reused, it would not follow it."""
    OutboxEmail.objects.all().delete()
    other = User.objects.create(id="other")
    OutboxEmail.objects.create(key="campaign:1:0", user=other, to_address="o@example.com")
    token = make_token("jane", "campaign:1:0")
    assert client.get(f"/unsubscribe/{token}/").status_code == 404
    assert client.post(f"/unsubscribe/{token}/", {"unsubscribe": "yes"}).status_code == 404
    assert not Unsubscription.objects.exists()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # the signature
        lambda token: "eyJ1IjoibWFsbG9yeSJ9" + token[token.index(":") :],  # another user
        lambda token: token[:20],  # cut short
    ],
)
def test_a_tampered_token_gets_a_400_and_changes_nothing(client, welcomed, tamper):
    token = token_of(welcomed)
    for response in (
        client.get(f"/unsubscribe/{tamper(token)}/"),
        client.post(f"/unsubscribe/{tamper(token)}/", {"unsubscribe": "yes"}),
    ):
        assert response.status_code == 400
        assert "not valid" in response.content.decode()
    assert not Unsubscription.objects.exists()
    assert not Event.objects.filter(name="unsubscribed").exists()


def test_a_link_for_a_deleted_user_gets_a_404(api, client, welcomed):
    row = OutboxEmail.objects.get(template_name="welcome")
    assert api.delete("/api/users/jane").status_code == 204
    assert client.get(link_path(welcomed)).status_code == 404
    assert client.post(link_path(welcomed), {"unsubscribe": "yes"}).status_code == 404
    assert client.get(f"/unsubscribe/{legacy_token('jane', row.key)}/").status_code == 404


def test_campaigns_skip_an_unsubscribed_user_and_transactions_still_go(
    api, client, clock, welcomed
):
    client.post(link_path(welcomed), {"unsubscribe": "yes"})
    mail.outbox.clear()

    clock.advance_and_tick(days=1)  # the campaign's next step
    tips = OutboxEmail.objects.get(template_name="tips")
    assert tips.status == OutboxEmail.Status.SKIPPED
    assert tips.reason.startswith("the user unsubscribed on 2026-03-02")
    assert mail.outbox == []

    emit(api, "jane", "purchase", orderId="ord_7")
    assert [m.subject for m in mail.outbox] == ["Your receipt"]
    assert "List-Unsubscribe" not in mail.outbox[0].extra_headers


def test_the_link_in_a_preview_shows_the_page_and_unsubscribes_nobody(client, welcomed):
    token = make_token("jane", "preview:welcome")  # as segflow_preview makes it
    for response in (client.get(f"/unsubscribe/{token}/"), client.post(f"/unsubscribe/{token}/")):
        assert response.status_code == 200
        assert "This link is from a preview" in response.content.decode()
    assert not Unsubscription.objects.exists()


@pytest.mark.parametrize("script_prefix", ["/", "/marketing/"])
def test_the_link_is_the_path_django_would_reverse_under_any_prefix(settings, script_prefix):
    # The path around the token is worked out once; the link must still be reverse()'s own.
    from django.urls import reverse, set_script_prefix

    from delivery.unsubscribe import unsubscribe_url

    settings.SEGFLOW_PUBLIC_URL = "https://mail.example.com"
    set_script_prefix(script_prefix)
    try:
        url = unsubscribe_url("jane", "campaign:welcome:7:0")
        token = url.split("/")[-2]
        assert url == "https://mail.example.com" + reverse("delivery:unsubscribe", args=[token])
        assert url.startswith(f"https://mail.example.com{script_prefix}unsubscribe/")
        assert signing.loads(token, salt=SALT)["o"] == "campaign:welcome:7:0"
    finally:
        set_script_prefix("/")
