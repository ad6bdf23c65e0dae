from django.db import models
from django.utils import timezone

from .fields import ExactCharField


class User(models.Model):
    """A person the app knows, under the app's own id. Segment SQL reads this table as `users`."""

    id = ExactCharField(primary_key=True, max_length=255)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # Every attribute write bumps `version` and sets `evaluation_pending`; segment evaluation clears
    # the flag only if the version it read is still current, so no write goes unevaluated.
    version = models.PositiveBigIntegerField(default=1)
    evaluation_pending = models.BooleanField(default=True)
    # When the schedule's sweep last handed out this user's pending evaluation (see pipeline.sweep).
    swept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "users"
        indexes = [models.Index(fields=["evaluation_pending", "updated_at"])]

    def __str__(self) -> str:
        return self.id

    @property
    def email(self) -> str:
        value = (self.attributes or {}).get("email")
        return value.strip() if isinstance(value, str) else ""


class Event(models.Model):
    """Something a user did. Segment SQL reads this table as `events`."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="events")
    name = ExactCharField(max_length=255)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set once transactions and segments have seen the event; the schedule sweeps up the rest.
    processed_at = models.DateTimeField(null=True, blank=True)
    # When the schedule's sweep last handed out this event again (see pipeline.sweep).
    swept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "events"
        indexes = [
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["name", "created_at"]),
            models.Index(fields=["processed_at", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.name} by {self.user_id}"


class ApiKey(models.Model):
    """A bearer key for the HTTP API. Only its SHA-256 is stored; the key is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=16, help_text="The key's first characters, to tell keys apart."
    )
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "api_keys"
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class OutboxEmail(models.Model):
    """Every email segflow means to send, written before it is handed to the provider.

    `key` names what caused the email (a cursor's step, or a transaction and an event) and is
    unique, so a retried step or event finds its row instead of sending again.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        SKIPPED = "skipped"
        # The provider may or may not have taken it (the sender died, or its answer never came):
        # never sent again by itself; a webhook about it turns it into `sent`.
        UNKNOWN = "unknown"

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
        return f"{self.subject!r} to {self.to_address or self.user_id}"


class Push(models.Model):
    """One applied `segflow_push`: what changed, and the fingerprint of the config it applied."""

    created_at = models.DateTimeField(default=timezone.now)
    fingerprint = models.CharField(max_length=64)
    location = models.CharField(
        max_length=1000, blank=True, help_text="Where the pushed config was loaded from."
    )
    email_provider = models.JSONField(default=dict, blank=True)
    plan = models.TextField()

    class Meta:
        db_table = "pushes"
        ordering = ["-id"]
        verbose_name_plural = "pushes"

    def __str__(self) -> str:
        return f"push {self.pk} at {self.created_at:%Y-%m-%d %H:%M}"
