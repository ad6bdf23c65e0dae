from django.db import models
from django.utils import timezone

from segflow.models import OutboxEmail, User


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
