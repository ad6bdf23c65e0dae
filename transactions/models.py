from django.db import models
from django.utils import timezone

from segflow.fields import ExactCharField


class Transaction(models.Model):
    """A transactional email as last pushed: sent once for every event of its name."""

    name = ExactCharField(max_length=255, unique=True)
    event = ExactCharField(max_length=255, db_index=True)
    source = models.TextField()
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "transactions"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (on {self.event})"
