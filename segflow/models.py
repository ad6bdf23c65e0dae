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


class Tally(models.Model):
    """A count the admin shows, kept as work happens (see segflow/tallies.py): one row a key.

    `kind` says what is counted and `owner` whose count it is (a campaign, a segment ...); `a`
    and `b` cut it further (a status, a step, a template, a reason), `hour` for counts by hour.
    """

    key_hash = models.CharField(max_length=40, unique=True)
    kind = models.CharField(max_length=32)
    owner = models.CharField(max_length=255, blank=True)
    a = models.CharField(max_length=255, blank=True)
    b = models.CharField(max_length=255, blank=True)
    hour = models.DateTimeField(null=True, blank=True)
    n = models.BigIntegerField(default=0)

    class Meta:
        db_table = "tallies"
        indexes = [
            models.Index(fields=["kind", "owner", "hour"]),
            models.Index(fields=["kind", "hour"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.owner} {self.a} {self.b}: {self.n}"


class TallyDelta(models.Model):
    """A change to a tally, written in the transaction that made it; folded into `Tally` by the
    schedule. Only ever inserted and deleted, so no two writers wait for each other on a count."""

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=32)
    owner = models.CharField(max_length=255, blank=True)
    a = models.CharField(max_length=255, blank=True)
    b = models.CharField(max_length=255, blank=True)
    hour = models.DateTimeField(null=True, blank=True)
    n = models.BigIntegerField()

    class Meta:
        db_table = "tally_deltas"
        indexes = [models.Index(fields=["kind", "owner"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.owner} {self.a} {self.b}: {self.n:+}"


class Heartbeat(models.Model):
    """When something periodic last happened: the schedule's tick, the last fold of tallies."""

    name = models.CharField(max_length=64, primary_key=True)
    at = models.DateTimeField()

    class Meta:
        db_table = "heartbeats"

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"
