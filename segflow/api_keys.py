"""API keys: random bearer tokens of which only a SHA-256 digest is stored.

Each process keeps the keys it found for SEGFLOW_API_KEY_CACHE_SECONDS, so a request costs no
query for its key; a key revoked in any process is therefore refused by every process at most
that long after the revocation commits (at once in the process that revoked it through
`revoke_api_keys` or by saving the row).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from .models import ApiKey

KEY_PREFIX = "sf_"

# Keys found, by digest: (monotonic time until which the row may be used unread, the row). Only
# keys that exist are kept, and at most this many, so random keys cannot grow it.
_found: dict[str, tuple[float, ApiKey]] = {}
_MAX_CACHED = 1000
# The cache's clock; the tests move it.
_clock = time.monotonic


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
    """The key's row if it exists and is not revoked, else None.

    Read from the database at most once per SEGFLOW_API_KEY_CACHE_SECONDS in this process: a
    revocation that commits at time t is seen by every process by t + that bound.
    """
    digest = hash_key(key)
    # Taken before the read: the bound runs from a moment the key was known to be valid.
    read_at = _clock()
    cached = _found.get(digest)
    if cached is not None and read_at < cached[0]:
        row = cached[1]
    else:
        row = ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True).first()
        if row is None:
            _found.pop(digest, None)
            return None
        seconds = settings.SEGFLOW_API_KEY_CACHE_SECONDS
        if seconds > 0:
            if len(_found) >= _MAX_CACHED:
                _found.clear()
            _found[digest] = (read_at + seconds, row)
    now = timezone.now()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
    return row


def revoke_api_keys(keys: QuerySet[ApiKey]) -> int:
    """Revoke the keys not revoked yet; returns how many. Refused at once by this process, and by
    the others within SEGFLOW_API_KEY_CACHE_SECONDS."""
    rows = list(keys.filter(revoked_at__isnull=True).values_list("pk", "key_hash"))
    count = ApiKey.objects.filter(pk__in=[pk for pk, _ in rows]).update(revoked_at=timezone.now())
    forget_api_keys(digest for _, digest in rows)
    return count


def forget_api_keys(digests: Iterable[str] | None = None) -> None:
    """Drop these keys (by digest; None: all) from this process's cache: read again next time."""
    if digests is None:
        _found.clear()
        return
    for digest in digests:
        _found.pop(digest, None)


@receiver(post_save, sender=ApiKey, dispatch_uid="segflow.api_keys.forget_saved")
def _forget_saved(sender, instance: ApiKey, **kwargs) -> None:
    forget_api_keys([instance.key_hash])
