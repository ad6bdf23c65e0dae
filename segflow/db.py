"""Database helpers every layer shares: the lock order, vendor differences, placeholders.

Kept in one place so that the rules they carry (users are locked in id order before anything
that belongs to them; an insert that may collide is written the same way on every vendor) are
written once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet
from django.db import DatabaseError, connection
from django.db.backends.signals import connection_created
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Lookup
from django.db.models.constants import OnConflict
from django.db.models.fields.related import ForeignObject
from django.db.models.sql import UpdateQuery
from django.dispatch import receiver

if TYPE_CHECKING:
    from django.db.models import Model, QuerySet

    from .models import User

# A named parameter in segment SQL: %(now)s.
NAMED_PARAMETER = re.compile(r"%\((\w+)\)s")


class Among(Lookup):
    """`field__among=values`: `field IN (values)` for values already as the database takes them
    (ids: ints and strings). `__in` prepares each value through the field, which for the hundreds
    of ids a batch reads and writes by cost a worker more than the query's round trip."""

    lookup_name = "among"
    prepare_rhs = False

    def get_prep_lookup(self) -> list:
        return list(self.rhs)

    def as_sql(self, compiler, connection) -> tuple[str, list]:
        if not self.rhs:
            raise EmptyResultSet
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} IN ({placeholders(self.rhs)})", [*lhs_params, *self.rhs]


Field.register_lookup(Among)
ForeignObject.register_lookup(Among)  # (its lookups are its own: user_id__among)


def lock_users(user_ids: Iterable[str]) -> dict[str, User]:
    """Lock the users with these ids, in id order, and return them by id (missing ones left out).

    Lock order everywhere: the users (in id order), then what belongs to them. Two transactions
    that lock overlapping users in their own orders would deadlock.
    """
    return {user.pk: user for user in _locking(user_ids)}


def lock_user_ids(user_ids: Iterable[str]) -> set[str]:
    """Lock the users with these ids as `lock_users` does; returns the ids of those that exist,
    without reading the rest of their rows."""
    return set(_locking(user_ids).values_list("pk", flat=True))


def _locking(user_ids: Iterable[str]) -> QuerySet[User]:
    from .models import User

    ids = sorted(set(user_ids))
    return User.objects.select_for_update().filter(pk__among=ids).order_by("pk")


def share_user_ids(user_ids: Iterable[str]) -> set[str]:
    """Lock the users with these ids against writes, in id order, as `lock_user_ids` does, but
    shared: other transactions that share them go on at once, those that lock them wait, and
    this waits for those that lock them. Returns the ids of those that exist.

    For writes that add rows belonging to users without changing the users' own rows (a batch of
    events): processing locks the users, so it waits for them, and sees what they wrote.
    """
    from .models import User

    ids = sorted(set(user_ids))
    if not ids:
        return set()
    quote = connection.ops.quote_name
    pk = quote(User._meta.pk.column)
    sql = (
        f"SELECT {pk} FROM {quote(User._meta.db_table)} WHERE {pk} IN ({placeholders(ids)}) "
        f"ORDER BY {pk}"
    )
    if connection.vendor != "sqlite":  # (SQLite's transaction holds the whole database)
        sql += " LOCK IN SHARE MODE"
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        return {user_id for (user_id,) in cursor.fetchall()}


def rows_through_index(queryset: QuerySet, index: str) -> list[tuple]:
    """The rows of a `values_list` query, read (and locked, with `select_for_update`) through
    this index on MySQL/MariaDB, as tuples.

    InnoDB locks a row through the index it reads it by. Two claims on the same rows that take
    them through different indexes can each hold what the other waits for: every claim of a
    queue's rows goes through the queue's index."""
    if connection.vendor != "mysql":
        return list(queryset)
    sql, params = queryset.query.sql_with_params()
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    hinted = sql.replace(
        f"FROM {table}", f"FROM {table} FORCE INDEX ({connection.ops.quote_name(index)})", 1
    )
    with connection.cursor() as cursor:
        cursor.execute(hinted, params)
        return cursor.fetchall()


def update_through_index(queryset: QuerySet, index: str, **values: Any) -> int:
    """`queryset.update(**values)`, finding its rows through this index on MySQL/MariaDB; the
    number of rows matched.

    An UPDATE locks every row it reads on its way. Given `id IN (...)` for a fifth of a small
    table, MariaDB reads the whole primary key instead of looking the ids up, and so waits on
    rows other transactions hold while they wait on its own: an UPDATE of rows this transaction
    holds, naming their index, reads (and locks) only those."""
    if connection.vendor != "mysql":
        return queryset.update(**values)
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    query.clear_ordering(force=True)
    try:
        sql, params = query.get_compiler(queryset.db).as_sql()
    except EmptyResultSet:
        return 0  # (`pk__in=[]`: as `update()` answers it)
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    hinted = sql.replace(
        f"UPDATE {table} SET",
        f"UPDATE {table} FORCE INDEX ({connection.ops.quote_name(index)}) SET",
        1,
    )
    if hinted == sql:
        raise DatabaseError(f"cannot name an index in this UPDATE: {sql[:80]}")
    with connection.cursor() as cursor:
        cursor.execute(hinted, params)
        return cursor.rowcount


def lock_queued(model: type[Model], ids: Sequence[int], index: str, queued: str) -> list[int]:
    """Lock, skipping those another transaction holds, the rows among `ids` that are still queued
    (`queued` IS NULL), through the queue's index (`queued`, id) as `rows_through_index` does.
    Returns the ids of those locked, in id order.

    On MariaDB each id is one lookup in the index, in id order. Given `id IN (...)`, MariaDB
    may read every queued row by the index's first column and filter them instead: with a
    backlog of 200,000 events that took 160 ms for a few hundred ids."""
    ids = sorted(ids)
    if not ids:
        return []
    if connection.vendor != "mysql" or not connection.mysql_is_mariadb:
        queue = model._default_manager.filter(pk__among=ids, **{f"{queued}__isnull": True})
        locked = queue.select_for_update(skip_locked=True).values_list("pk")
        return sorted(pk for (pk,) in rows_through_index(locked, index))
    quote = connection.ops.quote_name
    pk, column = quote(model._meta.pk.column), quote(model._meta.get_field(queued).column)
    sql = (
        f"SELECT STRAIGHT_JOIN queued.{pk} FROM JSON_TABLE(%s, '$[*]' COLUMNS (id BIGINT PATH "
        f"'$')) AS picked JOIN {quote(model._meta.db_table)} queued FORCE INDEX ({quote(index)}) "
        f"ON queued.{column} IS NULL AND queued.{pk} = picked.id FOR UPDATE SKIP LOCKED"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(ids)])
        return sorted(row_id for (row_id,) in cursor.fetchall())


def is_deadlock(error: DatabaseError) -> bool:
    """Whether the database rolled the transaction back to break a deadlock (MySQL's 1213)."""
    return connection.vendor == "mysql" and bool(error.args) and error.args[0] == 1213


def lock_user(user_id: str) -> User | None:
    """Lock one user (see `lock_users`); None if there is no such user."""
    return lock_users([user_id]).get(user_id)


@contextmanager
def plain_transaction() -> Iterator[CursorWrapper]:
    """A transaction of a few raw statements, begun and committed by two statements of its own.

    For short writes outside any atomic block: `transaction.atomic` switches autocommit off and
    on again around its transaction, two round trips more. Django does not know of this
    transaction, so nothing in it may use `transaction.atomic`; `transaction.on_commit` after it
    runs at once, the transaction being committed.
    """
    if connection.in_atomic_block or not connection.get_autocommit():
        raise RuntimeError("plain_transaction() runs only outside transaction.atomic")
    with connection.cursor() as cursor:
        # IMMEDIATE, as Django's own SQLite transactions here (settings/database.py).
        cursor.execute("BEGIN IMMEDIATE" if connection.vendor == "sqlite" else "START TRANSACTION")
        try:
            yield cursor
        except BaseException:
            try:
                cursor.execute("ROLLBACK")
            except DatabaseError:
                pass  # the connection is gone, and the transaction with it
            raise
        cursor.execute("COMMIT")


def insert_ignore() -> str:
    """The start of an INSERT that skips rows colliding with a unique key, on this vendor."""
    return "INSERT OR IGNORE" if connection.vendor == "sqlite" else "INSERT IGNORE"


def placeholders(values: Sequence | int) -> str:
    """`%s, %s, ...`, one for each value (or for a count)."""
    count = values if isinstance(values, int) else len(values)
    return ", ".join(["%s"] * count)


def _json_unquote(value):
    # SQLite's JSON_EXTRACT already returns strings unquoted, where MySQL's returns JSON text that
    # needs JSON_UNQUOTE. Giving SQLite a JSON_UNQUOTE that passes values through lets one query
    # text, JSON_UNQUOTE(JSON_EXTRACT(...)), run alike on both.
    return value


@receiver(connection_created)
def add_mysql_functions_to_sqlite(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("JSON_UNQUOTE", 1, _json_unquote, deterministic=True)


def insert_rows(rows: Sequence[Model]) -> None:
    """Insert new rows of one model, as `bulk_create` does, in a few multi-row INSERTs, and set
    their ids where the database returns them (MariaDB, SQLite; on MySQL they stay None).

    Written out: for a batch of a few dozen rows, the ORM's building of the statement (value by
    value) cost more CPU than the database's insert. A value shared by consecutive rows (the
    same object) is prepared once. Rows with an id of their own go through `bulk_create`.
    """
    if not rows:
        return
    model = type(rows[0])
    meta = model._meta
    if any(row.pk is not None for row in rows) or not meta.pk.db_returning:
        model.objects.bulk_create(rows)
        return
    fields = [f for f in meta.concrete_fields if f is not meta.pk and not f.generated]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    row_marks = f"({placeholders(len(fields))})"
    returning = connection.features.can_return_rows_from_bulk_insert
    size = max(1, connection.ops.bulk_batch_size(fields, rows))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            sql = (
                f"INSERT INTO {quote(meta.db_table)} ({columns}) "
                f"VALUES {', '.join([row_marks] * len(chunk))}"
            )
            if returning:
                sql += f" RETURNING {quote(meta.pk.column)}"
            cursor.execute(sql, _prepared_values(chunk, fields))
            ids = [pk for (pk,) in cursor.fetchall()] if returning else [None] * len(chunk)
            if len(ids) != len(chunk):
                raise DatabaseError(f"{len(chunk)} rows inserted, {len(ids)} ids returned")
            for row, pk in zip(chunk, ids, strict=True):
                row.pk = pk
                row._state.adding, row._state.db = False, connection.alias


def update_rows(rows: Sequence[Model], field_names: Sequence[str]) -> None:
    """Write the named fields of rows that exist and that this transaction has locked.

    On MySQL and MariaDB in one statement: an INSERT of the whole rows that, each meeting its
    own primary key first, updates the named fields instead (a batch of 50 cursors took 50
    UPDATEs, each a round trip and a third of all the statements of a welcome email). Elsewhere
    one UPDATE per row, sent as a batch: SQLite has no round trip to save, and its upsert would
    fail, not update, on a row that also meets another unique key.
    """
    if not rows:
        return
    meta = type(rows[0])._meta
    quote = connection.ops.quote_name
    table, pk = quote(meta.db_table), meta.pk
    named = [meta.get_field(name) for name in field_names]
    with connection.cursor() as cursor:
        if connection.vendor != "mysql":
            sql = (
                f"UPDATE {table} SET {', '.join(f'{quote(f.column)} = %s' for f in named)} "
                f"WHERE {quote(pk.column)} = %s"
            )
            values = [
                [f.get_db_prep_save(getattr(row, f.attname), connection) for f in named] + [row.pk]
                for row in rows
            ]
            cursor.executemany(sql, values)
            return
        fields = [f for f in meta.concrete_fields if not f.generated]
        row_marks = f"({placeholders(len(fields))})"
        # (Django's own words for "the value the row came with", MySQL's and MariaDB's.)
        updates = connection.ops.on_conflict_suffix_sql(
            fields, OnConflict.UPDATE, [f.column for f in named], [pk.column]
        )
        sql = (
            f"INSERT INTO {table} ({', '.join(quote(f.column) for f in fields)}) "
            f"VALUES {', '.join([row_marks] * len(rows))} {updates}"
        )
        values = [
            f.get_db_prep_save(getattr(row, f.attname), connection) for row in rows for f in fields
        ]
        cursor.execute(sql, values)


def _prepared_values(rows: Sequence[Model], fields: list) -> list[Any]:
    last: list[tuple[Any, Any]] = [(_UNSET, None)] * len(fields)
    values = []
    for row in rows:
        for n, f in enumerate(fields):
            value = f.pre_save(row, True)
            if value is not last[n][0]:
                last[n] = (value, f.get_db_prep_save(value, connection))
            values.append(last[n][1])
    return values


_UNSET = object()
