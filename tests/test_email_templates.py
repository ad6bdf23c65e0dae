"""Email templates as people expect them: inheritance, inlined CSS, a text part, preview text;
`segflow_preview` for a real user; the rendered email of any outbox row in the admin."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils.html import escape

from delivery.models import OutboxEmail

from .conftest import START
from .email_support import emit, put_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def jane(api, clock, pushed):
    """The example config pushed, and Jane, who got its welcome email."""
    pushed()
    put_user(api, "jane", email="jane@example.com", name="Jane", lastLoginAt=START.isoformat())
    return OutboxEmail.objects.get(template_name="welcome")


def test_the_example_welcome_email_is_rendered_as_people_expect(jane):
    html, text = jane.html, jane.text
    # Inheritance: the block of welcome.html inside the layout of base.html.
    assert "Thanks for joining us Jane!" in html and "Example Inc." in html
    # CSS from the layout's <style> block, inlined into the elements it styles.
    assert '<body style="font-family: -apple-system, Helvetica, Arial, sans-serif;' in html
    assert (
        'class="button" href="https://example.com/get-started" style="background: #2563eb;' in html
    )
    assert "@media (max-width: 480px)" in html and ".footer {" not in html
    # The preview text (the original's <Preview>), hidden in the HTML, absent from the text.
    assert "Welcome aboard!" in html
    assert "Welcome aboard!" not in text
    # The plain-text part, made from the HTML, with the link's address.
    assert text.startswith("Thanks for joining us Jane!")
    assert "[Get Started](https://example.com/get-started)" in text
    assert "Example Inc." in text and jane.unsubscribe_url in text
    assert f'href="{jane.unsubscribe_url}"' in html


def test_segflow_preview_renders_a_template_for_a_real_user_to_a_file(jane, tmp_path, capsys):
    output = tmp_path / "welcome.html"
    call_command("segflow_preview", "welcome", "--user", "jane", "--output", str(output))
    html = output.read_text()
    assert "Thanks for joining us Jane!" in html and "background: #2563eb" in html
    assert "/unsubscribe/" in html  # a working link, for this user
    assert "Thanks for joining us Jane!" in (tmp_path / "welcome.txt").read_text()
    assert "Subject: Welcome Jane!" in capsys.readouterr().out


def test_segflow_preview_of_a_transaction_uses_the_users_latest_event(api, jane, tmp_path):
    emit(api, "jane", "purchase", orderId="ord_1")
    latest = emit(api, "jane", "purchase", orderId="ord_2")
    output = tmp_path / "receipt.html"
    call_command("segflow_preview", "purchase-confirmation", "--user", "jane", "-o", str(output))
    assert "(ord_2)" in output.read_text()
    call_command(
        "segflow_preview", "purchase-confirmation", "--user", "jane", "--event", str(latest - 1),
        "-o", str(output),
    )  # fmt: skip
    assert "(ord_1)" in output.read_text()
    assert "unsubscribe" not in output.read_text().lower()  # transactional


@pytest.mark.parametrize(
    "args, message",
    [
        (["welcom", "--user", "jane"], "template: no template or transaction 'welcom'"),
        (["welcome", "--user", "nobody"], "user: no user 'nobody'"),
        (["purchase-confirmation", "--user", "jane", "--event", "999"], "event: user 'jane'"),
    ],
)
def test_segflow_preview_names_what_is_missing(jane, tmp_path, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("segflow_preview", *args, "--output", str(tmp_path / "x.html"))


def test_the_admin_shows_the_rendered_email_of_an_outbox_row(admin_client, jane):
    page = admin_client.get(reverse("admin:delivery_outboxemail_change", args=[jane.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    assert f'srcdoc="{escape(jane.html)}"' in content  # the HTML, in a sandboxed frame
    assert 'sandbox=""' in content
    assert escape(jane.text) in content  # the text part
    assert escape(f"List-Unsubscribe: <{jane.unsubscribe_url}>") in content
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in content
