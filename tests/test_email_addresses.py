"""An email goes to exactly one normalised address, and suppression is checked on that address.

anymail reads an address string as a list of recipients, so a user's `email` attribute that holds
several addresses (a comma, a header injected after a line break, an address group) used to reach
all of them, and a display name or a second address slipped past the suppression of the first.
The API refuses such a value (400 naming `attributes.email`); a user stored before that rule, or
changed by a flow, gets a `skipped` outbox row that says why. The local Postmark stand-in shows
what reaches the provider; tests/test_email_ses.py does the same for Amazon SES.
"""

from __future__ import annotations

import pytest

from delivery.models import OutboxEmail, Suppression
from delivery.sending import deliver_emails
from segflow import users as user_service
from segflow.live_config import live_config
from segflow.models import User

from .email_support import EMAILS, POSTMARK, email_config, put_user
from .email_support import postmark as postmark  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)

# Each of these reached two recipients through Postmark and Amazon SES.
SEVERAL = [
    "a@b.com, victim@evil.test",
    "a@b.com\r\nBcc: x@evil.test",
    "g:v5@evil.test,v6@evil.test;",
    "a@b.com; victim@evil.test",
    "a@b.com victim@evil.test",
]
# Each of these was sent although ceo@corp.test is suppressed.
DISGUISED = ["CEO <ceo@corp.test>", "other@example.com, ceo@corp.test", '"ceo@corp.test"']


@pytest.fixture
def setup(write_config, pushed, postmark):  # noqa: F811
    pushed(write_config(email_config(POSTMARK), EMAILS))


def stored_user(user_id: str, email) -> None:
    """A user whose `email` was stored before the API checked it (or set by a flow)."""
    user_service.put_user(user_id, {"email": email, "name": user_id.title()})


def recipients(postmark) -> list[str]:  # noqa: F811
    return [body["To"] for body in postmark.emails]


@pytest.mark.parametrize("value", SEVERAL + DISGUISED)
def test_an_email_attribute_that_is_not_one_bare_address_is_skipped_not_sent(
    clock,
    setup,
    postmark,  # noqa: F811
    value,
):
    stored_user("mallory", value)

    assert postmark.requests == []
    row = OutboxEmail.objects.get(template_name="welcome")
    assert row.status == OutboxEmail.Status.SKIPPED
    assert row.to_address == ""
    assert row.reason.startswith(f"the attribute `email` ({value!r}) is not one email address")
    assert "segflow sends to one bare address, such as jane@example.com" in row.reason


def test_a_suppressed_address_is_not_sent_in_any_disguise(clock, setup, postmark):  # noqa: F811
    Suppression.objects.create(address="ceo@corp.test", reason=Suppression.Reason.COMPLAINT)
    for n, value in enumerate([*DISGUISED, "  CEO@Corp.TEST ", "ceo@CORP.test\n"]):
        stored_user(f"u{n}", value)

    assert postmark.requests == []
    rows = OutboxEmail.objects.filter(template_name="welcome").order_by("user_id")
    assert [row.status for row in rows] == ["skipped"] * 5
    normalised = [row for row in rows if row.to_address]
    assert [row.to_address for row in normalised] == ["ceo@corp.test", "ceo@corp.test"]
    assert all("ceo@corp.test is suppressed since" in row.reason for row in normalised)


def test_a_good_address_goes_normalised_to_exactly_one_recipient(
    api,
    clock,
    setup,
    postmark,  # noqa: F811
):
    put_user(api, "jane", email="  Jane@Example.COM ", name="Jane")

    assert recipients(postmark) == ["jane@example.com"]
    row = OutboxEmail.objects.get(template_name="welcome")
    assert (row.status, row.to_address) == ("sent", "jane@example.com")
    # The attribute keeps what the app sent; only the address mail goes to is normalised.
    assert User.objects.get(pk="jane").attributes["email"] == "  Jane@Example.COM "


def test_a_row_queued_with_several_addresses_is_skipped_when_delivered(
    clock,
    setup,
    postmark,  # noqa: F811
):
    """A row stored before the rule (its `to_address` as the user had it) is never sent."""
    stored_user("mallory", "mallory@example.com")
    postmark.requests.clear()
    row = OutboxEmail.objects.create(
        key="test:old-row",
        user_id="mallory",
        to_address="mallory@example.com, victim@evil.test",
        subject="Hi",
        html="<p>hi</p>",
        text="hi",
        provider="postmark",
    )

    outcome = deliver_emails([row.pk], live_config.current())

    assert outcome == {row.pk: "skipped"}
    assert postmark.requests == []
    row.refresh_from_db()
    assert row.reason.startswith(
        "the address ('mallory@example.com, victim@evil.test') is not one email address"
    )


def test_a_row_queued_with_an_unnormalised_address_goes_to_the_normalised_one(
    clock,
    setup,
    postmark,  # noqa: F811
):
    stored_user("jane", "jane@example.com")
    postmark.requests.clear()
    row = OutboxEmail.objects.create(
        key="test:old-row",
        user_id="jane",
        to_address=" Jane@Example.com",
        subject="Hi",
        html="<p>hi</p>",
        text="hi",
        provider="postmark",
    )

    assert deliver_emails([row.pk], live_config.current()) == {row.pk: "sent"}
    assert recipients(postmark) == ["jane@example.com"]


# The API refuses such an `email` attribute, naming it.


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("value", SEVERAL + DISGUISED + ["jane@", "@example.com", "jane"])
def test_the_api_refuses_an_email_attribute_that_is_not_one_address(api, method, value):
    api.put("/api/users/jane", {"attributes": {"email": "jane@example.com"}}, format="json")
    response = getattr(api, method.lower())(
        "/api/users/jane", {"attributes": {"email": value, "name": "J"}}, format="json"
    )

    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["fields"]) == ["attributes.email"]
    assert body["error"].startswith("attributes.email: must be one email address")
    assert User.objects.get(pk="jane").attributes == {"email": "jane@example.com"}


@pytest.mark.parametrize("value", [42, ["a@b.com"], {"to": "a@b.com"}, True])
def test_the_api_refuses_an_email_attribute_that_is_not_a_string(api, value):
    response = api.put("/api/users/jane", {"attributes": {"email": value}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("attributes.email: must be a string")
    assert not User.objects.exists()


@pytest.mark.parametrize("value", ["jane@example.com", " Jane@Example.COM ", "", None])
def test_the_api_takes_one_address_or_none(api, value):
    response = api.put("/api/users/jane", {"attributes": {"email": value}}, format="json")
    assert response.status_code == 201, response.content
    # PATCH with null removes the attribute (RFC 7396), as for any other.
    response = api.patch("/api/users/jane", {"attributes": {"email": None}}, format="json")
    assert response.status_code == 200 and "email" not in response.json()["attributes"]


def test_an_address_suppressed_by_hand_in_the_admin_is_one_normalised_address(admin_client):
    url = "/admin/delivery/suppression/add/"
    form = {"address": "CEO <ceo@corp.test>", "reason": "manual", "detail": ""}
    response = admin_client.post(url, form)
    assert response.status_code == 200 and "Not one email address" in response.content.decode()
    assert not Suppression.objects.exists()

    response = admin_client.post(url, {**form, "address": " CEO@Corp.test "})
    assert response.status_code == 302
    assert Suppression.objects.get().address == "ceo@corp.test"
