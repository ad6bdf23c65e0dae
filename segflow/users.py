"""Users and events: the writes the API accepts, and what a user looks like when read back."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import CharField, F
from django.db.models.base import ModelState
from django.utils import timezone

from .db import (
    insert_ignore,
    is_deadlock,
    lock_user,
    lock_user_ids,
    lock_users,
    placeholders,
    plain_transaction,
    share_user_ids,
)
from .dispatch import wake
from .models import Event, User

logger = logging.getLogger(__name__)


class UserNotFound(Exception):
    pass


def put_user(user_id: str, attributes: dict[str, Any]) -> tuple[User, bool]:
    """Create the user, or replace all of their attributes. Returns (user, created).

    A PUT replaces whatever is there, so it needs neither a read nor a lock first: outside a
    transaction it is one INSERT ... ON DUPLICATE KEY UPDATE on MySQL and MariaDB; elsewhere an
    UPDATE, or an INSERT when there was nobody to update, each committed on its own."""
    now = timezone.now()
    if connection.in_atomic_block:
        return _put_user_locked(user_id, attributes, now)
    for _ in range(_WRITE_ATTEMPTS):
        if connection.vendor == "mysql":
            created = _upsert_user(user_id, attributes, now)
        elif _write_attributes(user_id, attributes, now):
            created = False
        else:
            try:
                _new_user(user_id, attributes, now).save(force_insert=True)
            except IntegrityError:
                continue  # created by a concurrent request since we looked: replace theirs
            created = True
        wake("users", [user_id])
        if created:
            return _new_user(user_id, attributes, now), True
        user = User.objects.filter(pk=user_id).first()
        if user is not None:
            return user, False
        # deleted since: create them again
    return _put_user_locked(user_id, attributes, now)


def _upsert_user(user_id: str, attributes: dict[str, Any], now: datetime) -> bool:
    """MySQL and MariaDB: create the user, or replace their attributes as `_write_attributes`
    does, in one statement. True if the user was created (the server counts an inserted row as
    1, an updated one as 2)."""
    insert, params = _user_insert(_new_user(user_id, attributes, now))
    stored = User._meta.get_field("attributes").get_db_prep_save(attributes, connection)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"{insert} ON DUPLICATE KEY UPDATE {quote('attributes')} = %s, "
            f"{quote('updated_at')} = %s, {quote('version')} = {quote('version')} + 1, "
            f"{quote('evaluation_pending')} = 1",
            [*params, stored, connection.ops.adapt_datetimefield_value(now)],
        )
        return cursor.rowcount == 1


def _new_user(user_id: str, attributes: dict[str, Any], now: datetime) -> User:
    return User(id=user_id, attributes=attributes, created_at=now, updated_at=now)


# How often a write without locks tries again after another write came in between, before it
# takes the user's lock.
_WRITE_ATTEMPTS = 5


def _write_attributes(
    user_id: str, attributes: dict[str, Any], now: datetime, *, if_version: int | None = None
) -> bool:
    """Store the user's attributes, bump their version and mark them for evaluation; only if
    their version is still `if_version`, when given. False when no row was written."""
    rows = User.objects.filter(pk=user_id)
    if if_version is not None:
        rows = rows.filter(version=if_version)
    return bool(
        rows.update(
            attributes=attributes,
            updated_at=now,
            version=F("version") + 1,
            evaluation_pending=True,
        )
    )


def _put_user_locked(user_id: str, attributes: dict[str, Any], now: datetime) -> tuple[User, bool]:
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
                transaction.on_commit(lambda: wake("users", [user_id]))
                return user, True
        user.attributes = attributes
        mark_attributes_changed(user, now)
    return user, False


def patch_user(user_id: str, patch: dict[str, Any]) -> User:
    """Merge `patch` into the user's attributes (RFC 7396: a null removes the attribute).

    Outside a transaction: read, merge, and write only if nobody wrote in between (the version
    is unchanged), else read again; no lock is held from the read to the write."""
    now = timezone.now()
    if not connection.in_atomic_block:
        for _ in range(_WRITE_ATTEMPTS):
            user = User.objects.filter(pk=user_id).first()
            if user is None:
                raise UserNotFound(user_id)
            merged = merge_patch(user.attributes or {}, patch)
            if _write_attributes(user_id, merged, now, if_version=user.version):
                wake("users", [user_id])
                user.attributes, user.updated_at = merged, now
                user.version, user.evaluation_pending = user.version + 1, True
                return user
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
    _write_attributes(user.pk, user.attributes, now)
    # The row is locked, so the version it had is the one just incremented.
    user.updated_at, user.version, user.evaluation_pending = now, user.version + 1, True
    user_id = user.pk
    transaction.on_commit(lambda: wake("users", [user_id]))


def delete_user(user_id: str) -> bool:
    """Remove the user and everything about them: events, memberships, cursors, emails."""
    with transaction.atomic():
        deleted, _ = User.objects.filter(pk=user_id).delete()
    return deleted > 0


# (Not frozen: a frozen dataclass sets each field through object.__setattr__, five times the
# cost of making one, and a batch makes 500.)
@dataclass(slots=True)
class NewEvent:
    """An event as the API received it. `timestamp` is when it happened (None: as it arrives);
    `message_id` the sender's id for it, which makes a repeated event a duplicate."""

    user_id: str
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    timestamp: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def row(self, now: datetime) -> Event:
        """The event's row, not yet saved."""
        # Made as Django makes rows it reads, not through Model.__init__, which cost more than
        # storing them for a batch of 500 (bench/README.md). Every column is set: see
        # tests/test_event_ingest.py.
        event = Event.__new__(Event)
        event.__dict__.update(
            id=None,
            user_id=self.user_id,
            name=self.name,
            attributes=self.attributes,
            timestamp=self.timestamp or now,
            created_at=now,
            message_id=self.message_id,
            context=self.context,
            processed_at=None,
            swept_at=None,
        )
        event._state = ModelState()
        return event


@dataclass(frozen=True)
class Recorded:
    """A stored event; `duplicate` when its message id was already stored (the stored one)."""

    event: Event
    duplicate: bool = False


def record_event(user_id: str, name: str, attributes: dict[str, Any]) -> Event:
    """Store an event (creating an unknown user) and have it processed after commit."""
    return store_event(NewEvent(user_id, name, attributes)).event


def record_events(events: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Event]:
    """Store many (user id, name, attributes) events at once; see `store_events`."""
    return [r.event for r in store_events([NewEvent(*event) for event in events])]


def store_event(new: NewEvent) -> Recorded:
    """Store one event (creating an unknown user) and have it processed after commit.

    An event whose `message_id` is already stored is not stored again: the stored one comes back
    as a duplicate, and nothing is done again. The unique key on `events.message_id` decides,
    so two concurrent requests with the same id store one event between them.
    """
    now = timezone.now()
    if not connection.in_atomic_block and connection.get_autocommit():
        recorded = _store_event_alone(new, now)
        if recorded is not None:
            return recorded
    try:
        with transaction.atomic():
            # The user first, as everywhere: an insert that waits on a message id another request
            # is storing must not hold anything that request waits for.
            if lock_user(new.user_id) is None:
                _create_user(new.user_id, now)
            event = new.row(now)
            event.save(force_insert=True)
            event_id = event.pk
            transaction.on_commit(lambda: wake("events", [event_id]))
    except IntegrityError:
        # The message id was stored meanwhile (committed: the insert waited for its lock).
        stored = _stored_events([new.message_id]).get(new.message_id) if new.message_id else None
        if stored is None:
            raise
        return Recorded(stored, duplicate=True)
    return Recorded(event)


def _store_event_alone(new: NewEvent, now: datetime) -> Recorded | None:
    """Store the event outside `transaction.atomic`, in as few round trips as it takes; None if
    it cannot be stored this way (the user is unknown and the event has no message id: then
    `store_event`'s locked way does it).

    An event with a message id: one plain transaction of two statements, which lock the user
    (creating them if unknown) and insert the event, in the lock order of every other write.

    An event without one, of a known user: one statement, its own transaction. It takes no lock
    on the user first, and needs none: the foreign key check takes a shared lock on the user's
    row until the insert commits, so it waits for whoever holds the user (an event's processing,
    a batch) and is seen by whoever locks the user next. Holding no message id, it holds nothing
    that anyone waits for while it waits. (Two such requests for one user at the same moment may
    commit in the other order than their ids; nothing reads events by ranges of ids.)
    """
    event = new.row(now)
    try:
        if new.message_id is None:
            with connection.cursor() as cursor:
                cursor.execute(_insert_sql(), _insert_params([event]))
                event_id = cursor.lastrowid
        else:
            with plain_transaction() as cursor:
                cursor.execute(*_lock_or_create_user_sql(new.user_id, now))
                cursor.execute(_insert_sql(), _insert_params([event]))
                event_id = cursor.lastrowid
    except IntegrityError:
        # The message id is stored (committed: the insert waited for its lock), or, without a
        # message id, the user is unknown (the foreign key).
        stored = _stored_events([new.message_id]).get(new.message_id) if new.message_id else None
        if stored is None and new.message_id is not None:
            raise
        return None if stored is None else Recorded(stored, duplicate=True)
    _mark_saved(event, event_id)
    wake("events", [event_id])  # committed already
    return Recorded(event)


def _lock_or_create_user_sql(user_id: str, now: datetime) -> tuple[str, list]:
    """One statement that creates the user with no attributes, or locks the row if they exist."""
    sql, params = _user_insert(_new_user(user_id, {}, now))
    pk = connection.ops.quote_name(User._meta.pk.column)
    if connection.vendor == "sqlite":
        sql += f" ON CONFLICT ({pk}) DO NOTHING"  # the write lock is the transaction's already
    else:
        # On a duplicate key the row is locked, as for an update, and left as it is.
        sql += f" ON DUPLICATE KEY UPDATE {pk} = {pk}"
    return sql, params


def _user_insert(user: User) -> tuple[str, list]:
    """The INSERT of an unsaved user's row, and its parameters."""
    fields = User._meta.concrete_fields
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    sql = f"INSERT INTO {quote(User._meta.db_table)} ({columns}) VALUES ({placeholders(fields)})"
    return sql, [f.get_db_prep_save(f.pre_save(user, True), connection) for f in fields]


def store_events(
    events: Sequence[NewEvent], attribute_patches: Sequence[tuple[str, dict[str, Any]]] = ()
) -> list[Recorded]:
    """Store many events at once, all or none, creating unknown users, and merge attribute
    patches (user id, patch; RFC 7396 like `patch_user`, creating unknown users) in the same
    transaction. The events are processed after commit, SEGFLOW_BATCH_SIZE to a task, in the
    given order; users whose attributes changed are re-evaluated.

    An event whose `message_id` is already stored, or repeats one earlier in `events`, is not
    stored again: its place in the answer holds the stored (or first) event, as a duplicate.
    """
    results: list[Recorded | None] = [None] * len(events)
    candidates: list[int] = []  # positions of the events that are not repeats within the batch
    first: dict[str, int] = {}  # message id -> position of its first event in this batch
    for n, new in enumerate(events):
        if new.message_id is None or new.message_id not in first:
            if new.message_id is not None:
                first[new.message_id] = n
            candidates.append(n)
    shared = not attribute_patches and _inserts_return_rows() and not connection.in_atomic_block
    try:
        stored, fresh, rows, inserted = _store_batch(events, candidates, attribute_patches, shared)
    except OperationalError as error:
        if not (shared and is_deadlock(error)):
            raise
        # Batches sharing users inserted the same message ids in different orders, and the
        # database rolled this one back: once more, holding the users alone.
        logger.info("a batch of %d events deadlocked with another; storing it again", len(events))
        stored, fresh, rows, inserted = _store_batch(events, candidates, attribute_patches, False)
    inserted_at = dict(zip(fresh, zip(rows, inserted, strict=True), strict=True))
    for n in candidates:
        if n in inserted_at and inserted_at[n][1]:
            results[n] = Recorded(inserted_at[n][0])
        else:
            results[n] = Recorded(stored[events[n].message_id], duplicate=True)
    for n, new in enumerate(events):
        if results[n] is None:  # a repeat of an earlier event in this batch
            results[n] = Recorded(results[first[new.message_id]].event, duplicate=True)
    return results


def _store_batch(
    events: Sequence[NewEvent],
    candidates: list[int],
    attribute_patches: Sequence[tuple[str, dict[str, Any]]],
    shared: bool,
) -> tuple[dict[str, Event], list[int], list[Event], list[bool]]:
    """`store_events`' transaction: the message ids found stored, the positions of the events
    inserted or not, their rows, and for each whether it was inserted. `shared`: the users are
    shared with other batches (see `share_user_ids`), not locked."""
    now = timezone.now()
    patched = {user_id for user_id, _ in attribute_patches}
    user_ids = sorted({events[n].user_id for n in candidates} | patched)
    # Rows and their statement's values are made before the users are locked: every other
    # request and drain for these users waits while this one holds them.
    row_at = {n: events[n].row(now) for n in candidates}
    prepared = _prepared_params(list(row_at.values()))
    with transaction.atomic():
        # Lock the users first, in id order, as event processing does: inserting an event locks
        # its user too, and two batches locking the same users in their own orders deadlock.
        if attribute_patches:
            users = lock_users(user_ids)
        elif shared:
            # Only events are added: batches for the same users go on side by side, and the
            # users' processing waits for each. (Which message ids a batch stored it then learns
            # from its inserts, not from holding the users alone: `_insert_ignore_returning`.)
            users = dict.fromkeys(share_user_ids(user_ids))
        else:  # (only whether they exist is needed: their rows are not read)
            users = dict.fromkeys(lock_user_ids(user_ids))
        missing = [user_id for user_id in user_ids if user_id not in users]
        if missing:
            User.objects.bulk_create(
                [
                    User(id=user_id, attributes={}, created_at=now, updated_at=now)
                    for user_id in missing
                ],
                ignore_conflicts=True,
            )
        if attribute_patches:
            _merge_attributes(attribute_patches, users, [u for u in missing if u in patched], now)
        # The message ids stored before, read once this batch holds its users: what a request
        # that stored events for them before this batch took them is committed and seen here.
        stored = _stored_events(events[n].message_id for n in candidates if events[n].message_id)
        fresh = [n for n in candidates if events[n].message_id not in stored]
        rows = [row_at[n] for n in fresh]
        inserted = _insert_events(rows, prepared)
        # An event skipped by the unique key: its message id was stored since (committed: the
        # insert waited for its lock), by a batch sharing these users or for another user.
        raced = [row.message_id for row, ok in zip(rows, inserted, strict=True) if not ok]
        stored.update(_stored_events(raced))
        if any(message_id not in stored for message_id in raced):
            raise IntegrityError("an event was not inserted, yet its message id is not stored")
        ids = [row.pk for row, ok in zip(rows, inserted, strict=True) if ok]
        if ids:
            transaction.on_commit(lambda: wake("events", ids))
    return stored, fresh, rows, inserted


def _create_user(user_id: str, now: datetime) -> None:
    """Create a user with no attributes, locked; or lock the one a concurrent request created."""
    try:
        with transaction.atomic():
            User.objects.create(id=user_id, attributes={}, created_at=now, updated_at=now)
    except IntegrityError:
        lock_user(user_id)


def _merge_attributes(
    patches: Sequence[tuple[str, dict[str, Any]]],
    users: dict[str, User],
    created: list[str],
    now: datetime,
) -> None:
    """Merge the patches into the locked users, one write per user whose attributes change
    (and per user just created, whose segments are then evaluated for the first time)."""
    if created:
        # Created above (or, if a concurrent request won, by it): lock and read them now.
        users.update(lock_users(created))
    before = {user_id: users[user_id].attributes for user_id, _ in patches}
    for user_id, patch in patches:
        user = users[user_id]
        user.attributes = merge_patch(user.attributes or {}, patch)
    for user_id, attributes in before.items():
        if users[user_id].attributes != attributes or user_id in created:
            mark_attributes_changed(users[user_id], now)


def _stored_events(message_ids: Iterable[str]) -> dict[str, Event]:
    ids = list(message_ids)
    if not ids:
        return {}
    return {e.message_id: e for e in Event.objects.filter(message_id__in=ids)}


_INSERTED_FIELDS = (
    "user_id",
    "name",
    "attributes",
    "timestamp",
    "created_at",
    "message_id",
    "context",
)


def _insert_events(rows: list[Event], prepared: Prepared | None = None) -> list[bool]:
    """Insert the rows in order, setting their ids; for each, whether it was inserted (False: its
    message id was stored since the caller looked, for another user).

    The unique key on the message id decides, never a read before the write: rows are inserted
    with insert-ignore, which skips a row whose message id is taken.
    """
    if not any(row.message_id for row in rows):
        # Nothing to collide: the fastest insert this database has.
        if connection.features.can_return_rows_from_bulk_insert:
            _insert_returning_ids(rows, prepared)
        else:  # (MySQL gives no ids back from a multi-row insert)
            for row in rows:
                row.save(force_insert=True)
        return [True] * len(rows)
    if _inserts_return_rows():
        return _insert_ignore_returning(rows, prepared)
    if all(row.message_id for row in rows):
        return _insert_all(rows, prepared)
    inserted = []
    with connection.cursor() as cursor:
        for row in rows:
            _execute_insert(cursor, [row], prepared, insert_ignore())
            if cursor.rowcount == 1:
                _mark_saved(row, cursor.lastrowid)
                inserted.append(True)
            else:
                inserted.append(False)
    return inserted


def _insert_returning_ids(rows: list[Event], prepared: Prepared | None = None) -> None:
    """Insert the rows, a few hundred a statement, and set their ids from the database's
    RETURNING (MariaDB, SQLite), in the order of the rows as Django's bulk_create relies on.
    Written out: for 500 events the ORM spent more building the statement than running it."""
    size = max(1, connection.ops.bulk_batch_size(_inserted_fields(), rows))
    returning = f" RETURNING {connection.ops.quote_name(Event._meta.pk.column)}"
    alias = connection.alias
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            _execute_insert(cursor, chunk, prepared, returning=returning)
            ids = [pk for (pk,) in cursor.fetchall()]
            if len(ids) != len(chunk):
                raise IntegrityError(f"{len(chunk)} events inserted, {len(ids)} ids returned")
            for row, pk in zip(chunk, ids, strict=True):
                _mark_saved(row, pk, alias)


def _inserts_return_rows() -> bool:
    """Whether this database returns the rows a multi-row insert-ignore inserted, and only those,
    and has row locks to share (MariaDB 10.5+). SQLite returns them too, but its transactions
    hold the whole database, and an insert-ignore returning rows there meets concurrent
    connections' table locks."""
    return connection.vendor != "sqlite" and connection.features.can_return_rows_from_bulk_insert


def _insert_ignore_returning(rows: list[Event], prepared: Prepared | None = None) -> list[bool]:
    """Insert the rows with insert-ignore, a few hundred a statement, and learn from RETURNING
    which were inserted, and their ids: the returned rows come in the order of `rows`, less
    those skipped (a row without a message id is never skipped)."""
    size = max(1, connection.ops.bulk_batch_size(_inserted_fields(), rows))
    quote = connection.ops.quote_name
    returning = (
        f" RETURNING {quote(Event._meta.pk.column)}, "
        f"{quote(Event._meta.get_field('message_id').column)}"
    )
    inserted, alias = [], connection.alias
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            _execute_insert(cursor, chunk, prepared, insert_ignore(), returning)
            returned = iter(cursor.fetchall())
            pk, message_id = next(returned, (None, None))
            for row in chunk:
                if pk is not None and (row.message_id is None or row.message_id == message_id):
                    _mark_saved(row, pk, alias)
                    inserted.append(True)
                    pk, message_id = next(returned, (None, None))
                elif row.message_id is None:
                    raise IntegrityError("an event without a message id was not inserted")
                else:
                    inserted.append(False)
            if pk is not None:
                raise IntegrityError("the database returned an event that was not inserted")
    return inserted


def _insert_all(rows: list[Event], prepared: Prepared | None = None) -> list[bool]:
    """Insert rows that all have message ids in a few statements, and read their ids back by
    message id. A row whose id is stored under its own user is the one inserted here: the caller
    holds the rows' users, and had seen every event stored for them before (see `store_events`).
    Stored under another user, it was skipped: that user's event came first."""
    fields = _inserted_fields()
    size = max(1, connection.ops.bulk_batch_size(fields, rows))
    count = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            _execute_insert(cursor, chunk, prepared, insert_ignore())
            count += cursor.rowcount
    stored = {
        message_id: (pk, user_id)
        for pk, message_id, user_id in Event.objects.filter(
            message_id__in=[row.message_id for row in rows]
        ).values_list("pk", "message_id", "user_id")
    }
    inserted = []
    for row in rows:
        pk, user_id = stored.get(row.message_id, (None, None))
        if user_id == row.user_id:
            _mark_saved(row, pk)
        inserted.append(user_id == row.user_id)
    if sum(inserted) != count:
        raise IntegrityError(f"{count} events inserted, but {sum(inserted)} read back")
    return inserted


def _inserted_fields():
    return [Event._meta.get_field(name) for name in _INSERTED_FIELDS]


def _insert_sql(count: int = 1, verb: str = "INSERT") -> str:
    """INSERT of `count` event rows (see `_insert_params`); `verb` may be insert_ignore()."""
    values = ", ".join([f"({placeholders(len(_INSERTED_FIELDS))})"] * count)
    return _insert_head(verb) + values


def _insert_head(verb: str) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in _inserted_fields())
    return f"{verb} INTO {quote(Event._meta.db_table)} ({columns}) VALUES "


def _execute_insert(
    cursor, rows: list[Event], prepared: Prepared | None, verb: str = "INSERT", returning: str = ""
) -> None:
    """Run the INSERT of `rows` (`verb`: see `_insert_sql`), then `returning`."""
    written = prepared.get(id(rows[0])) if prepared is not None else None
    if isinstance(written, bytes):
        # (As text: what the connection's wrappers and logging expect of a statement.)
        values = b", ".join([prepared[id(row)] for row in rows]).decode(
            connection.connection.encoding
        )
        cursor.execute(_insert_head(verb) + values + returning)
    else:
        cursor.execute(_insert_sql(len(rows), verb) + returning, _insert_params(rows, prepared))


# Each row's values for its INSERT, by the row's id(), made ahead by `_prepared_params`: its
# parameters, or on MySQL/MariaDB its `(...)` of VALUES, written as the driver would.
Prepared = dict[int, list | bytes]


def _prepared_params(rows: list[Event]) -> Prepared:
    if connection.vendor == "mysql":
        return _written_values(rows)
    flat, width = _insert_params(rows), len(_INSERTED_FIELDS)
    return {id(row): flat[n * width : (n + 1) * width] for n, row in enumerate(rows)}


def _written_values(rows: list[Event]) -> dict[int, bytes]:
    """The rows' VALUES as SQL, each value escaped by the driver's own function. The driver
    escapes a statement's parameters one call each, a tenth of a batch's CPU in the web process
    (bench/README.md); here each distinct text (a name, a user with several events) and each
    other value object (the batch's time, `{}`) is prepared and written once."""
    connection.ensure_connection()
    driver = connection.connection
    escape, encoding = driver.string_literal, driver.encoding
    fields = _inserted_fields()
    columns = [(f, f.attname, _stored_as_is(f)) for f in fields]
    texts: dict[str, bytes] = {}
    others: dict[int, bytes] = {_EMPTY_KEY: escape(b"{}")}  # (by id(): the rows hold them)
    written = {}
    for row in rows:
        values = row.__dict__
        literals = []
        for f, attname, as_is in columns:
            value = values[attname]
            if value is None:
                literal = b"NULL"
            elif as_is and type(value) is str:
                literal = texts.get(value)
                if literal is None:
                    literal = texts[value] = escape(value.encode(encoding))
            else:
                key = _EMPTY_KEY if type(value) is dict and not value else id(value)
                literal = others.get(key)
                if literal is None:
                    prepared = f.get_db_prep_save(value, connection)
                    if prepared is None:
                        literal = b"NULL"
                    elif type(prepared) is str:
                        literal = escape(prepared.encode(encoding))
                    else:
                        literal = driver.literal(prepared)
                    others[key] = literal
            literals.append(literal)
        written[id(row)] = b"(" + b", ".join(literals) + b")"
    return written


_EMPTY_KEY = -1  # (no object's id(): any empty JSON object)


def _stored_as_is(f) -> bool:
    """Whether the field stores a str unchanged (a CharField, or a key to one)."""
    return isinstance(getattr(f, "target_field", f), CharField)


def _insert_params(rows: list[Event], prepared: Prepared | None = None) -> list:
    if prepared is not None:
        return [value for row in rows for value in prepared[id(row)]]
    fields = _inserted_fields()
    text = [_stored_as_is(f) for f in fields]
    # Rows of one batch share many values (its time, an empty context): each is prepared once.
    last: list[tuple[Any, Any]] = [(_UNSET, None)] * len(fields)
    params = []
    for row in rows:
        for n, f in enumerate(fields):
            value = getattr(row, f.attname)
            if text[n] and type(value) is str:
                params.append(value)
                continue
            same = _EMPTY if type(value) is dict and not value else value
            if same is not last[n][0]:
                last[n] = (same, f.get_db_prep_save(value, connection))
            params.append(last[n][1])
    return params


_UNSET, _EMPTY = object(), object()  # (nothing prepared yet; any empty JSON object)


def _mark_saved(row: Event, pk: int, alias: str | None = None) -> None:
    row.id = pk
    row._state.adding, row._state.db = False, alias or connection.alias
