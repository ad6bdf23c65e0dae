"""The embedded default prints each email in a few readable lines, not its MIME source."""

import io

from django.core.mail import EmailMultiAlternatives

from delivery.console import EmailBackend


def test_an_email_on_the_console_is_a_few_readable_lines():
    stream = io.StringIO()
    message = EmailMultiAlternatives(
        subject="Welcome Jane!",
        body="Hello Jane,\n\nthanks for joining.",
        from_email="hi@example.com",
        to=["jane@example.com"],
        headers={"List-Unsubscribe": "<https://example.com/u/abc>"},
    )
    message.attach_alternative("<p>Hello <b>Jane</b></p>" * 50, "text/html")
    assert EmailBackend(stream=stream).send_messages([message]) == 1
    printed = stream.getvalue()
    assert "Email to jane@example.com from hi@example.com" in printed
    assert "Subject: Welcome Jane!" in printed
    assert "thanks for joining." in printed
    assert "Content-Transfer-Encoding" not in printed and "<b>Jane</b>" not in printed
    assert len(printed.splitlines()) <= 10


def test_the_embedded_default_prints_emails_with_it(monkeypatch):
    import importlib

    from segflow_project.settings import email as email_settings

    monkeypatch.delenv("EMAIL_BACKEND", raising=False)
    assert importlib.reload(email_settings).EMAIL_BACKEND == "delivery.console.EmailBackend"
