from django.db import models
from django.utils import timezone

from segflow.models import Event, User


class OutboxEmail(models.Model):
    """Every email segflow means to send, written before it is handed to the provider.

    `key` names what caused the email (a cursor's step, or a transaction and an event) and is
    unique, so a retried step or event finds its row instead of sending again.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"
        SKIPPED = "skipped", "skipped"
        # The provider may or may not have taken it (the sender died, or its answer never came):
        # never sent again by itself; a webhook about it turns it into `sent`.
        UNKNOWN = "unknown", "unknown (the provider may have it)"

    key = models.CharField(max_length=255, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="outbox_emails")
    to_address = models.CharField(max_length=320, blank=True)
    from_address = models.CharField(max_length=320, blank=True)
    subject = models.TextField(blank=True)
    html = models.TextField(blank=True)
    text = models.TextField(blank=True)
    template_name = models.CharField(max_length=255, blank=True)
    campaign_name = models.CharField(max_length=255, blank=True)
    cursor_id = models.BigIntegerField(null=True, blank=True)
    step_index = models.PositiveIntegerField(null=True, blank=True)
    transaction_name = models.CharField(max_length=255, blank=True)
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, null=True, blank=True, related_name="outbox_emails"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    reason = models.TextField(blank=True, help_text="Why the email was skipped or failed.")
    message_id = models.CharField(max_length=255, blank=True, db_index=True)
    provider = models.CharField(max_length=32, blank=True, help_text="Who was asked to send it.")
    unsubscribe_url = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Calls made to the provider.")
    # A queued row that failed for a passing reason waits here for the schedule's sweep.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the schedule's sweep last handed this row to a delivery task (see pipeline.sweep).
    swept_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    # What the provider's webhooks told afterwards.
    delivered_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)
    complained_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True, help_text="First opened.")
    clicked_at = models.DateTimeField(null=True, blank=True, help_text="First clicked.")
    feedback = models.TextField(blank=True, help_text="The provider's last word on a bounce.")
    # The pushed version (ConfigVersion.number) that wrote it; empty for a config not pushed as
    # files. A number, not a key: old versions are pruned, the rows that name them stay.
    config_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "outbox"
        verbose_name = "outbox email"
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["status", "updated_at"]),
            # A batch of cursors looks up the rows its steps already stored.
            models.Index(fields=["cursor_id", "step_index"]),
        ]

    def __str__(self) -> str:
        to = self.to_address or self.user_id
        if self.subject:
            return f"“{self.subject}” to {to}"
        return f"{self.template_name or 'email'} to {to} ({self.status}, no subject)"


class Suppression(models.Model):
    """An address no email goes to, campaign or transactional: it bounced hard or complained.

    Keyed by the address (lower case), not the user: a user who changes their address can be
    emailed at the new one, and a user deleted and created again stays suppressed at the old.
    Deleting the row (in the admin) lifts the suppression.
    """

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", "hard bounce"
        COMPLAINT = "complaint", "spam complaint"
        INACTIVE = "inactive", "the provider refuses to send to it"
        MANUAL = "manual", "added by hand"

    address = models.CharField(max_length=320, unique=True)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    detail = models.TextField(blank=True, help_text="What the provider said.")
    provider = models.CharField(max_length=32, blank=True)
    outbox_email = models.ForeignKey(
        OutboxEmail, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "email_suppressions"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.address} ({self.get_reason_display()})"


class Unsubscription(models.Model):
    """A user who unsubscribed: campaigns no longer email them; transactional email still goes.

    Deleting the row (in the admin) subscribes the user again.
    """

    class Method(models.TextChoices):
        LINK = "link", "followed the unsubscribe link"
        ONE_CLICK = "one_click", "one-click unsubscribe from the mail client (RFC 8058)"
        PROVIDER = "provider", "unsubscribed at the email provider"

    user = models.OneToOneField(
        User, primary_key=True, on_delete=models.CASCADE, related_name="unsubscription"
    )
    method = models.CharField(max_length=16, choices=Method.choices)
    outbox_email = models.ForeignKey(
        OutboxEmail, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "email_unsubscriptions"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user_id} ({self.created_at:%Y-%m-%d})"
