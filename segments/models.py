from django.db import models
from django.utils import timezone

from segflow.fields import ExactCharField
from segflow.models import User


class Segment(models.Model):
    """A segment as last pushed. Its query lives in the config; this row holds what it was."""

    class Kind(models.TextChoices):
        SQL = "sql", "SQL"
        EVALUATOR = "evaluator", "evaluator (a QuerySet)"

    name = ExactCharField(max_length=255, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    source = models.TextField(help_text="The SQL, or the evaluator's source code.")
    fingerprint = models.CharField(max_length=64)
    reads_users = models.BooleanField(
        default=True, help_text="Re-evaluated when attributes change."
    )
    reads_events = models.BooleanField(default=False, help_text="Re-evaluated when events arrive.")
    refresh_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Re-evaluated for all users this often, as time passes."
    )
    refreshed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "segments"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="segment_memberships")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "segment_memberships"
        constraints = [
            models.UniqueConstraint(fields=["segment", "user"], name="one_membership_per_user")
        ]
        indexes = [models.Index(fields=["user", "segment"])]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.segment.name}"


class MembershipHistory(models.Model):
    """A user entering or leaving a segment: the history of memberships, newest last.

    Kept when the segment is removed (by name; `segment_id` has no constraint), dropped with the
    user.
    """

    segment_id = models.BigIntegerField()
    segment_name = ExactCharField(max_length=255)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="membership_changes")
    entered = models.BooleanField(help_text="True: entered the segment; False: left it.")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "segment_membership_changes"
        verbose_name = "segment entry or exit"
        verbose_name_plural = "segment entries and exits"
        indexes = [
            models.Index(fields=["user", "at"]),
            models.Index(fields=["segment_id", "at"]),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {'entered' if self.entered else 'left'} {self.segment_name}"


class SegmentSnapshot(models.Model):
    """The segment's size at a moment: after each full evaluation (a refresh, a push), and
    hourly in between, for the chart of members over time."""

    class Occasion(models.TextChoices):
        EVALUATION = "evaluation", "evaluated for all users"
        RANGE = "range", "evaluated for a range of users"
        PUSH = "push", "counted after a push"
        HOURLY = "hourly", "hourly count"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="snapshots")
    at = models.DateTimeField(default=timezone.now)
    occasion = models.CharField(max_length=16, choices=Occasion.choices)
    members = models.BigIntegerField()
    entered = models.BigIntegerField(default=0)
    left = models.BigIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True, help_text="How long the evaluation took.")

    class Meta:
        db_table = "segment_snapshots"
        indexes = [models.Index(fields=["segment", "at"])]

    def __str__(self) -> str:
        return f"{self.segment_id}: {self.members} at {self.at:%Y-%m-%d %H:%M}"
