"""A test send: a template rendered for a chosen user, sent to a staff member's own address.

The row is marked as a test (its key starts with `test:`, its subject with `[Test]`): it counts
in no figure, is not the user's email, carries no working unsubscribe link, and goes out through
the same outbox and provider as every other email.
"""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from segflow.config import Config
from segflow.dispatch import enqueue
from templates.preview import PreviewError, preview_email
from templates.rendering import RenderError

from .models import OutboxEmail
from .policy import normalize_address
from .providers import from_address, provider_for
from .tallies import TEST_KEY_PREFIX


class TestSendError(Exception):
    """The test cannot be sent; the message says what to fix."""


def send_test(
    config: Config, template: str, user_id: str, to_address: str, sent_by: str = ""
) -> OutboxEmail:
    """Queue `template` rendered for `user_id`, to `to_address`; returns the outbox row."""
    address = normalize_address(to_address or "")
    if not address:
        raise TestSendError(
            "Your staff account has no email address: add one (Staff accounts, your login), "
            "then send the test again."
        )
    if not user_id:
        raise TestSendError("Choose the user to render the email for.")
    try:
        preview = preview_email(config, template, user_id)
    except (PreviewError, RenderError) as exc:
        raise TestSendError(f"The test was not sent: {exc}") from exc
    now = timezone.now()
    with transaction.atomic():
        row = OutboxEmail.objects.create(
            # test:<template>:<who sent it>:<unique>
            key=f"{TEST_KEY_PREFIX}{template[:100]}:{sent_by[:100]}:{uuid.uuid4().hex[:12]}",
            user=preview.user,
            to_address=address,
            from_address=from_address(config.email_provider),
            provider=provider_for(config.email_provider).name,
            template_name=template,
            subject=f"[Test] {preview.email.subject}",
            html=preview.email.html,
            text=preview.email.text,
            status=OutboxEmail.Status.QUEUED,
            created_at=now,
            updated_at=now,
        )
        transaction.on_commit(lambda: enqueue("deliver_emails", [row.pk]))
    return row
