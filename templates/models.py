from django.db import models
from django.utils import timezone

from segflow.fields import ExactCharField


class EmailTemplate(models.Model):
    """An email template as last pushed: its subject and HTML source, for people to read."""

    name = ExactCharField(max_length=255, unique=True)
    source = models.TextField()
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "email_templates"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
