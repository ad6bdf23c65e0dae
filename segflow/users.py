"""Users and events: the writes the API accepts, and what a user looks like when read back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from .db import lock_user, lock_users
from .dispatch import enqueue, enqueue_in_batches
from .models import Event, User


class UserNotFound(Exception):
    pass


def put_user(user_id: str, attributes: dict[str, Any]) -> tuple[User, bool]:
    """Create the user, or replace all of their attributes. Returns (user, created)."""
    now = timezone.now()
    with transaction.atomic():
        user = lock_user(user_id)
        if user is None:
            try:
                with transaction.atomic():
                    user = User.objects.create(
                        id=user_id, attributes=attributes, created_at=now, updated_at=now
                    )
            except IntegrityError:
                # Created by a concurrent request since we looked: replace theirs, like a PUT.
                user = lock_user(user_id)
            else:
                transaction.on_commit(lambda: enqueue("evaluate_user", user_id))
                return user, True
        user.attributes = attributes
        mark_attributes_changed(user, now)
    return user, False


def patch_user(user_id: str, patch: dict[str, Any]) -> User:
    """Merge `patch` into the user's attributes (RFC 7396: a null removes the attribute)."""
    now = timezone.now()
    with transaction.atomic():
        user = lock_user(user_id)
        if user is None:
            raise UserNotFound(user_id)
        user.attributes = merge_patch(user.attributes or {}, patch)
        mark_attributes_changed(user, now)
    return user


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def mark_attributes_changed(user: User, now: datetime) -> None:
    """Save the locked user's new attributes and have their segments re-evaluated after commit.

    `user` is left as the row now is, so callers answer with it without reading it again.
    """
    User.objects.filter(pk=user.pk).update(
        attributes=user.attributes,
        updated_at=now,
        version=F("version") + 1,
        evaluation_pending=True,
    )
    # The row is locked, so the version it had is the one just incremented.
    user.updated_at, user.version, user.evaluation_pending = now, user.version + 1, True
    user_id = user.pk
    transaction.on_commit(lambda: enqueue("evaluate_user", user_id))


def delete_user(user_id: str) -> bool:
    """Remove the user and everything about them: events, memberships, cursors, emails."""
    with transaction.atomic():
        deleted, _ = User.objects.filter(pk=user_id).delete()
    return deleted > 0


def record_event(user_id: str, name: str, attributes: dict[str, Any]) -> Event:
    """Store an event (creating an unknown user) and have it processed after commit."""
    now = timezone.now()
    with transaction.atomic():
        _, created = User.objects.get_or_create(
            pk=user_id, defaults={"attributes": {}, "created_at": now, "updated_at": now}
        )
        event = Event.objects.create(
            user_id=user_id, name=name, attributes=attributes, created_at=now
        )
        event_id = event.pk
        transaction.on_commit(lambda: enqueue("process_events", [event_id]))
    return event


def record_events(events: list[tuple[str, str, dict[str, Any]]]) -> list[Event]:
    """Store many (user id, name, attributes) events at once, all or none, creating unknown
    users; they are processed after commit, SEGFLOW_BATCH_SIZE to a task, in the given order."""
    now = timezone.now()
    user_ids = sorted({user_id for user_id, _, _ in events})
    with transaction.atomic():
        # Lock the users first, in id order, as event processing does: inserting an event locks
        # its user too, and two batches locking the same users in their own orders deadlock.
        existing = set(lock_users(user_ids))
        User.objects.bulk_create(
            [
                User(id=user_id, attributes={}, created_at=now, updated_at=now)
                for user_id in user_ids
                if user_id not in existing
            ],
            ignore_conflicts=True,
        )
        rows = [
            Event(user_id=user_id, name=name, attributes=attributes, created_at=now)
            for user_id, name, attributes in events
        ]
        if connection.features.can_return_rows_from_bulk_insert:
            Event.objects.bulk_create(rows)
        else:  # (MySQL gives no ids back from a multi-row insert)
            for row in rows:
                row.save(force_insert=True)
        ids = [row.pk for row in rows]
        transaction.on_commit(lambda: enqueue_in_batches("process_events", ids))
    return rows
