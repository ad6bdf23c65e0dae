from django.db import models
from django.utils import timezone

from segflow.fields import ExactCharField
from segflow.models import User


class Campaign(models.Model):
    """A campaign as last pushed. A removed campaign stays, inactive, with its cursors' history."""

    class Behavior(models.TextChoices):
        STATIC = "static", "static"
        DYNAMIC = "dynamic", "dynamic"

    name = ExactCharField(max_length=255, unique=True)
    behavior = models.CharField(max_length=16, choices=Behavior.choices)
    segments = models.JSONField(default=list)
    exclude_segments = models.JSONField(default=list, blank=True)
    source = models.TextField(help_text="The flow's source code.")
    fingerprint = models.CharField(max_length=64)
    flow_fingerprint = models.CharField(max_length=64)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "campaigns"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Cursor(models.Model):
    """One user's way through one campaign: where they are and when their next step is due."""

    class Status(models.TextChoices):
        # The labels are what every page shows, lower case like the rest of the admin's labels.
        ACTIVE = "active", "active"
        COMPLETED = "completed", "completed"
        EXITED = "exited", "exited (left the audience)"
        DIVERGED = "diverged", "diverged (flow changed)"
        FAILED = "failed", "failed"
        ENDED = "ended", "ended (campaign removed)"
        # A push changed the flow under it; a new cursor runs the flow from the top.
        RESTARTED = "restarted", "restarted (flow changed)"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="cursors")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="cursors")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The user's id while this cursor holds the user's place in the campaign, NULL once it lets go.
    # Unique with the campaign: at most one such cursor per user and campaign, enforced by the
    # database (MySQL has no partial unique index; NULLs never collide). An active cursor always
    # holds it; a finished one holds it for good in a static campaign, and in a dynamic one until
    # the user leaves the audience, so they can come back in when they match again.
    entry_key = ExactCharField(max_length=255, null=True, blank=True)
    step_count = models.PositiveIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True)
    # Set while a scheduler has handed the cursor to a worker (see services.claim_due_cursors).
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Set by a push with on_change="keep_old": the version (ConfigVersion.number) whose flow this
    # cursor keeps running until it finishes. Empty: it runs the live version's flow.
    pinned_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "campaign_cursors"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "entry_key"], name="one_place_per_user")
        ]
        indexes = [
            models.Index(fields=["due_at"]),
            models.Index(fields=["user", "campaign"]),
            models.Index(fields=["campaign", "status"]),
            # The campaign page: the next due of the active cursors at each step.
            models.Index(fields=["campaign", "status", "step_count", "due_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.campaign.name} ({self.status})"


class CursorStep(models.Model):
    """A step a cursor performed, with what the flow saw then: what replay feeds back."""

    cursor = models.ForeignKey(Cursor, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    args = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    user_snapshot = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    # The pushed version (ConfigVersion.number) whose flow performed this step; empty for a
    # config that was not pushed as files.
    config_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "campaign_cursor_steps"
        ordering = ["cursor", "index"]
        constraints = [
            models.UniqueConstraint(fields=["cursor", "index"], name="one_record_per_step")
        ]

    def __str__(self) -> str:
        return f"step {self.index + 1} of cursor {self.cursor_id}: {self.kind}"
