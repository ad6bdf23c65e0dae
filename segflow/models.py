from django.db import models
from django.utils import timezone

from .addresses import address_problem, normalize_address
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
        """The one address email goes to: the `email` attribute, normalised (lower case, no
        display name); "" when the attribute is missing or is not exactly one bare address."""
        return normalize_address((self.attributes or {}).get("email"))

    @property
    def email_problem(self) -> str:
        """Why no email can go to this user, for a person to read; "" when one can."""
        value = (self.attributes or {}).get("email")
        return address_problem(value, "the attribute `email`") or (
            "" if self.email else "the user has no email address (set the attribute `email`)"
        )


# Named as Django named it, so that a query can name it.
QUEUE_INDEX = "events_process_67ef0b_idx"


class Event(models.Model):
    """Something a user did. Segment SQL reads this table as `events`."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="events")
    name = ExactCharField(max_length=255)
    attributes = models.JSONField(default=dict, blank=True)
    # When the event happened, as the sender says (`timestamp`), else when it arrived.
    timestamp = models.DateTimeField(default=timezone.now)
    # When segflow received it.
    created_at = models.DateTimeField(default=timezone.now)
    # The sender's id for the event (Segment's messageId). Unique across all users, so a retried
    # event is stored and acted on once; NULLs (no id given) do not collide on any database.
    message_id = ExactCharField(max_length=255, null=True, blank=True, unique=True)
    # What the sender said about where the event came from (Segment's `context`: library, ip...).
    context = models.JSONField(default=dict, blank=True)
    # Set once transactions and segments have seen the event; the schedule sweeps up the rest.
    processed_at = models.DateTimeField(null=True, blank=True)
    # When the schedule's sweep last handed out this event again (see pipeline.sweep).
    swept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "events"
        indexes = [
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["user", "timestamp"]),
            models.Index(fields=["name", "created_at"]),
            # Segments that count a user's events of one name: read from the index alone, for a
            # batch of users or (in user order, no sort) for everyone.
            models.Index(fields=["name", "user"]),
            # The queue of unprocessed events. Drains claim through it alone (see pipeline).
            models.Index(fields=["processed_at", "id"], name=QUEUE_INDEX),
        ]

    def __str__(self) -> str:
        return f"{self.name} by {self.user_id}"


class ApiKey(models.Model):
    """A bearer key for the HTTP API. Only its SHA-256 is stored; the key is shown once."""

    class Scope(models.TextChoices):
        # What a key may do. A push runs the team's Python on every worker: a push key is as
        # powerful as a shell on them, and is never needed by an app backend.
        INGEST = "ingest", "ingest: the users and events API"
        PUSH = "push", "push: configs (POST /api/push), nothing else"

    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.INGEST)
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


class ConfigVersion(models.Model):
    """A pushed config: the source of its module and of the files beside it, as every process
    runs it (see segflow.config.bundle). Numbered from 1; a rollback applies one again."""

    number = models.PositiveIntegerField(unique=True)
    fingerprint = models.CharField(
        max_length=64, db_index=True, help_text="Of the files: tells two versions apart."
    )
    config_fingerprint = models.CharField(
        max_length=64, help_text="Of the definitions, as a push compares them."
    )
    location = models.CharField(
        max_length=1000, blank=True, help_text="Where it was pushed from, as given to the push."
    )
    entry = models.CharField(max_length=255, help_text="The config module's file name.")
    files = models.JSONField(default=dict, help_text="Each file's path and text.")
    size = models.PositiveIntegerField(default=0)
    git_commit = models.CharField(max_length=64, blank=True)
    git_dirty = models.BooleanField(
        null=True, blank=True, help_text="The config's folder had changes not committed."
    )
    pushed_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "config_versions"
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"version {self.number}"


class Push(models.Model):
    """One applied `segflow_push` (or rollback): what changed, and the version it made live."""

    created_at = models.DateTimeField(default=timezone.now)
    fingerprint = models.CharField(max_length=64)
    location = models.CharField(
        max_length=1000, blank=True, help_text="Where the pushed config was loaded from."
    )
    email_provider = models.JSONField(default=dict, blank=True)
    plan = models.TextField()
    # The version this push made live; none for pushes from before versions were stored. The
    # version of the last push is the one every process runs.
    version = models.ForeignKey(
        ConfigVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="pushes"
    )
    pushed_by = models.CharField(max_length=200, blank=True)
    rollback = models.BooleanField(default=False)

    class Meta:
        db_table = "pushes"
        ordering = ["-id"]
        verbose_name_plural = "pushes"

    def __str__(self) -> str:
        return f"push {self.pk} at {self.created_at:%Y-%m-%d %H:%M}"


class PushAttempt(models.Model):
    """Every push and rollback tried, locally or over HTTP, whatever came of it: the audit."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    via = models.CharField(max_length=16, help_text="`command` (manage.py) or `http`.")
    actor = models.CharField(max_length=200, help_text="The API key's name, or the local user.")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    client_ip = models.CharField(max_length=64, blank=True)
    forwarded_for = models.CharField(max_length=500, blank=True)
    action = models.CharField(max_length=16, help_text="`push` or `rollback`.")
    dry_run = models.BooleanField(default=False)
    location = models.CharField(max_length=1000, blank=True)
    fingerprint = models.CharField(max_length=64, blank=True)
    git_commit = models.CharField(max_length=64, blank=True)
    git_dirty = models.BooleanField(null=True, blank=True)
    result = models.CharField(
        max_length=16, help_text="applied, unchanged, dry run, failed (the config) or refused."
    )
    message = models.TextField(blank=True)
    version_number = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "push_audit"
        ordering = ["-id"]
        verbose_name = "push attempt"

    def __str__(self) -> str:
        return f"{self.action} by {self.actor}: {self.result}"


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
