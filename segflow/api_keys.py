"""API keys: random bearer tokens of which only a SHA-256 digest is stored."""

from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone

from .models import ApiKey

KEY_PREFIX = "sf_"


def hash_key(key: str) -> str:
    # The keys are 256 random bits, so a fast hash is as safe as a slow one and keeps requests fast.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


SCOPES = tuple(ApiKey.Scope.values)  # ("ingest", "push")


def create_api_key(name: str, scope: str = ApiKey.Scope.INGEST) -> tuple[ApiKey, str]:
    """Create a key named `name` with `scope` (`ingest`: the users and events API; `push`:
    configs). Returns the row and the key itself, which is not stored."""
    if scope not in SCOPES:
        raise ValueError(f"scope: must be one of {', '.join(SCOPES)}, got {scope!r}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(name=name, prefix=key[:10], key_hash=hash_key(key), scope=scope)
    return row, key


def find_api_key(key: str) -> ApiKey | None:
    row = ApiKey.objects.filter(key_hash=hash_key(key), revoked_at__isnull=True).first()
    if row is not None:
        now = timezone.now()
        if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
    return row
