"""Segment evaluation: for one user (after a write or an event), and for everyone (set-based).

A segment is a query returning a column `id` of users: raw SQL from the config, or the SQL Django
compiles from an evaluator's QuerySet. Both are wrapped, never edited: a per-user check is
``SELECT ... FROM (<segment>) s WHERE s.id = %s`` with the user id bound as a parameter.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from segflow.config import SegmentDef, call_with_arity
from segflow.db import NAMED_PARAMETER, insert_ignore, placeholders
from segflow.fields import exact_collation
from segflow.models import User

from . import history, tallies
from .models import Segment, SegmentMembership, SegmentSnapshot

logger = logging.getLogger(__name__)


class SegmentError(Exception):
    """A segment's query could not be built or run; the message names the segment."""


@dataclass(frozen=True)
class SegmentQuery:
    sql: str  # with %s placeholders
    params: list


def segment_query(definition: SegmentDef, now: datetime) -> SegmentQuery:
    """The segment's SQL for this moment, with its parameters bound positionally."""
    if definition.sql is not None:
        values = {"now": now}
        if definition.params is not None:
            try:
                extra = definition.params(now)
            except Exception as exc:
                raise SegmentError(f"segment {definition.name!r}: params raised {exc!r}") from exc
            if not isinstance(extra, dict):
                raise SegmentError(f"segment {definition.name!r}: params must return a dict")
            values.update(extra)
        names = NAMED_PARAMETER.findall(definition.sql)
        missing = sorted(set(names) - set(values))
        if missing:
            raise SegmentError(
                f"segment {definition.name!r}: no value for parameter(s) {', '.join(missing)}"
            )
        return SegmentQuery(
            NAMED_PARAMETER.sub("%s", definition.sql), [_adapt(values[n]) for n in names]
        )

    try:
        queryset = call_with_arity(definition.evaluator, User.objects.all(), now)
    except Exception as exc:
        raise SegmentError(f"segment {definition.name!r}: the evaluator raised {exc!r}") from exc
    if not isinstance(queryset, QuerySet) or queryset.model is not User:
        raise SegmentError(
            f"segment {definition.name!r}: the evaluator must return a QuerySet over users "
            f"(filter the `users` it is given), got {type(queryset).__name__}"
        )
    sql, params = (
        queryset.order_by().values("id").query.get_compiler(connection=connection).as_sql()
    )
    return SegmentQuery(sql, list(params))


def _adapt(value):
    # Datetimes compare with DateTimeField columns only in the form Django stores them in.
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, date):
        return connection.ops.adapt_datefield_value(value)
    return value


def tables_read(definition: SegmentDef, now: datetime | None = None) -> tuple[bool, bool]:
    """Whether the segment reads `users` and whether it reads `events`."""
    sql = segment_query(definition, now or timezone.now()).sql
    reads = lambda table: re.search(rf"(?<![\w.]){table}(?!\w)", sql, re.IGNORECASE) is not None  # noqa: E731
    return reads("users"), reads("events")


def check_query(definition: SegmentDef, now: datetime) -> None:
    """Run the segment's query once, returning nothing, to catch SQL errors at push time."""
    query = segment_query(definition, now)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM ({query.sql}) s WHERE 1 = 0", query.params)
            columns = [c[0].lower() for c in cursor.description or []]
    except Exception as exc:
        raise SegmentError(f"segment {definition.name!r}: the query failed: {exc}") from exc
    if "id" not in columns:
        raise SegmentError(
            f"segment {definition.name!r}: the query must return a column named `id` "
            f"(it returns {', '.join(columns) or 'nothing'}); write `SELECT u.id FROM users u ...`"
        )


# ---------------------------------------------------------------------------------------------
# One user.


@dataclass
class MembershipChange:
    entered: set[int] = field(default_factory=set)  # segment ids
    left: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.entered or self.left)

    @property
    def segment_ids(self) -> set[int]:
        return self.entered | self.left


def matching_segments_of(
    user_ids: list[str], segments: list[tuple[Segment, SegmentDef]], now
) -> dict[str, set[int]]:
    """Which of `segments` each of the users is in now: one query for all of them. Users in none
    are left out of the answer."""
    if not segments or not user_ids:
        return {}
    marks = placeholders(user_ids)
    parts, params = [], []
    for position, (row, definition) in enumerate(segments):
        query = segment_query(definition, now)
        parts.append(
            f"SELECT {int(row.pk)} AS segment_id, s{position}.id AS user_id "
            f"FROM ({query.sql}) s{position} WHERE s{position}.id IN ({marks})"
        )
        params += [*query.params, *user_ids]
    try:
        matched: dict[str, set[int]] = {}
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            for segment_id, user_id in cursor.fetchall():
                matched.setdefault(user_id, set()).add(segment_id)
        return matched
    except Exception:
        if len(segments) == 1:
            raise
    # One broken segment must not stop the others: find it, log it, go on without it.
    matched = {}
    for pair in segments:
        try:
            for user_id, ids in matching_segments_of(user_ids, [pair], now).items():
                matched.setdefault(user_id, set()).update(ids)
        except Exception:
            logger.exception("segment %r failed for users %r", pair[1].name, user_ids[:10])
    return matched


def evaluate_users(
    user_ids: list[str], segments: list[tuple[Segment, SegmentDef]], now: datetime
) -> dict[str, MembershipChange]:
    """Bring the users' memberships of `segments` up to date, with a few statements for all of
    them; return what changed, for the users whose memberships changed."""
    matched = matching_segments_of(user_ids, segments, now)
    ids = {row.pk for row, _ in segments}
    current: dict[str, set[int]] = {}
    for user_id, segment_id in SegmentMembership.objects.filter(
        user_id__among=user_ids, segment_id__among=ids
    ).values_list("user_id", "segment_id"):
        current.setdefault(user_id, set()).add(segment_id)
    changes = {}
    for user_id in user_ids:
        now_in, was_in = matched.get(user_id, set()), current.get(user_id, set())
        change = MembershipChange(entered=now_in - was_in, left=was_in - now_in)
        if change:
            changes[user_id] = change
    entered = [
        SegmentMembership(segment_id=s, user_id=user_id, created_at=now)
        for user_id, change in changes.items()
        for s in change.entered
    ]
    if entered:
        SegmentMembership.objects.bulk_create(entered, ignore_conflicts=True)
    for user_id, change in changes.items():
        if change.left:
            SegmentMembership.objects.filter(user_id=user_id, segment_id__in=change.left).delete()
    history.note_changes(changes, {row.pk: row.name for row, _ in segments}, now)
    return changes


# ---------------------------------------------------------------------------------------------
# Everyone.


@dataclass(frozen=True)
class RefreshCount:
    entered: int
    left: int


# A range of user ids: from the first, included, to the second, excluded; None is open.
IdRange = tuple[str | None, str | None]


def user_id_ranges(size: int | None = None) -> list[IdRange]:
    """The user id space cut into consecutive ranges of about `size` users each, in id order.

    The ends are open, so the ranges cover every user, including users created after this ran.
    """
    size = size or settings.SEGFLOW_SEGMENT_CHUNK_USERS
    ranges: list[IdRange] = []
    low = None
    while True:
        users = User.objects.order_by("pk")
        if low is not None:
            users = users.filter(pk__gte=low)
        high = users.values_list("pk", flat=True)[size : size + 1].first()
        ranges.append((low, high))
        if high is None:
            return ranges
        low = high


def range_condition(column: str, id_range: IdRange) -> tuple[str, list]:
    """SQL (starting with AND) keeping `column` within `id_range`, and its parameters."""
    low, high = id_range
    sql, params = "", []
    if low is not None:
        sql, params = f" AND {column} >= %s", [low]
    if high is not None:
        sql, params = sql + f" AND {column} < %s", [*params, high]
    return sql, params


# Told of each range done, with what changed in it: how a caller shows progress.
OnRange = Callable[[IdRange, RefreshCount], None]


def refresh_segment(
    row: Segment,
    definition: SegmentDef,
    now: datetime,
    id_range: IdRange | None = None,
    *,
    on_range: OnRange | None = None,
) -> RefreshCount:
    """Re-evaluate the segment for all users (or those in `id_range`), in the database: no user
    id passes through Python. All users are done range by range (SEGFLOW_SEGMENT_CHUNK_USERS),
    so no statement locks or holds more than one range's memberships at once. A snapshot of the
    segment's size is kept, with how long it took.
    """
    started = time.monotonic()
    if id_range is None:
        entered = left = 0
        for each in user_id_ranges():
            count = _refresh_range(row, definition, now, each)
            entered, left = entered + count.entered, left + count.left
            if on_range is not None:
                on_range(each, count)
        count = RefreshCount(entered=entered, left=left)
    else:
        count = _refresh_range(row, definition, now, id_range)
        if on_range is not None:
            on_range(id_range, count)
    whole = id_range is None or id_range == (None, None)
    history.snapshot(
        row,
        SegmentSnapshot.Occasion.EVALUATION if whole else SegmentSnapshot.Occasion.RANGE,
        now,
        entered=count.entered,
        left=count.left,
        seconds=time.monotonic() - started,
    )
    return count


def _refresh_range(
    row: Segment, definition: SegmentDef, now: datetime, id_range: IdRange
) -> RefreshCount:
    # The query runs once per range into a temporary table keyed by user id; leavers and
    # newcomers are then anti-joins against it. (Correlating the query itself per member made
    # the database run an aggregate segment once per member.) Each anti-join runs once, into a
    # second temporary table that both the history and the memberships are written from.
    query = segment_query(definition, now)
    created_at = connection.ops.adapt_datetimefield_value(now)
    answer, changed = f"segflow_answer_{row.pk}", f"segflow_changed_{row.pk}"
    mysql = connection.vendor == "mysql"

    def drop(table: str) -> str:
        return (
            f"DROP TEMPORARY TABLE IF EXISTS {table}"
            if mysql
            else f"DROP TABLE IF EXISTS temp.{table}"
        )

    def create(table: str) -> str:
        return (
            f"CREATE TEMPORARY TABLE {table} (id VARCHAR(255) "
            # (the collation of users.id: comparing ids across two collations is an error)
            + (f"CHARACTER SET utf8mb4 COLLATE {exact_collation(connection)}" if mysql else "")
            + " PRIMARY KEY)"
        )

    in_range_q, q_params = range_condition("q.id", id_range)
    in_range_m, m_params = range_condition("user_id", id_range)
    in_range_u, u_params = range_condition("u.id", id_range)
    with connection.cursor() as cursor:
        for table in (answer, changed):
            cursor.execute(drop(table))
            cursor.execute(create(table))
        try:
            cursor.execute(
                f"{insert_ignore()} INTO {answer} (id) "
                f"SELECT q.id FROM ({query.sql}) q WHERE q.id IS NOT NULL{in_range_q}",
                [*query.params, *q_params],
            )
            cursor.execute(
                f"INSERT INTO {changed} (id) SELECT user_id FROM segment_memberships "
                f"WHERE segment_id = %s{in_range_m} AND user_id NOT IN (SELECT id FROM {answer})",
                [row.pk, *m_params],
            )
            history.log_leavers(row, changed, now)
            cursor.execute(
                "DELETE FROM segment_memberships WHERE segment_id = %s "
                f"AND user_id IN (SELECT id FROM {changed})",
                [row.pk],
            )
            left = cursor.rowcount
            cursor.execute(f"DELETE FROM {changed}")
            cursor.execute(
                f"INSERT INTO {changed} (id) SELECT u.id FROM {answer} a "
                "JOIN users u ON u.id = a.id WHERE NOT EXISTS (SELECT 1 FROM segment_memberships m "
                f"WHERE m.segment_id = %s AND m.user_id = u.id){in_range_u}",
                [row.pk, *u_params],
            )
            history.log_newcomers(row, changed, now)
            cursor.execute(
                "INSERT INTO segment_memberships (segment_id, user_id, created_at) "
                f"SELECT %s, id, %s FROM {changed}",
                [row.pk, created_at],
            )
            entered = cursor.rowcount
        finally:
            for table in (answer, changed):
                cursor.execute(drop(table))
    Segment.objects.filter(pk=row.pk).update(refreshed_at=now)
    count = RefreshCount(entered=max(entered, 0), left=max(left, 0))
    tallies.note_members({row.pk: count.entered - count.left})
    return count


def claim_due_refreshes(now: datetime) -> list[Segment]:
    """Segments whose answer changes with time alone and whose refresh interval has passed,
    each claimed by moving its `refreshed_at` to now: a compare-and-set that one claimer wins."""
    claimed = []
    for row in Segment.objects.filter(refresh_seconds__isnull=False):
        last = row.refreshed_at
        if last is not None and (now - last).total_seconds() < row.refresh_seconds:
            continue
        if Segment.objects.filter(pk=row.pk, refreshed_at=last).update(refreshed_at=now):
            claimed.append(row)
    return claimed
