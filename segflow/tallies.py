"""Counts kept as work happens, so that no page of the admin counts a table that keeps growing.

A count is a `Key` (what is counted, whose, cut by up to two labels and an hour) and a number.
Whoever changes a counted row adds the difference it makes (`add`), in the same transaction, as
rows of `tally_deltas`: insert-only, so two workers never wait for each other on a count. The
schedule folds the deltas into `tallies`, one row per key (`fold`, at each tick). A reader
(`read`) sums both tables in one statement, which sees one snapshot: what it reads is exact, and
costs the number of keys plus the deltas since the last fold, however many rows were counted.

Each app says what its rows count for (`campaigns.tallies`, `delivery.tallies`,
`segments.tallies`) and can count it all again from its tables (`recount`); `segflow.upkeep`
rebuilds every tally from scratch that way.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .models import Heartbeat, Tally, TallyDelta

MAX_LABEL = 255  # the columns' size
TICK = "tick"  # the heartbeat of the schedule
REASON_PREFIX = 200  # reasons are grouped by their first characters
# Counts by the hour are kept this long; the admin shows at most the last 30 days.
HOURLY_RETENTION = timedelta(days=40)


class Key(NamedTuple):
    kind: str
    owner: str = ""
    a: str = ""
    b: str = ""
    hour: datetime | None = None

    @property
    def digest(self) -> str:
        hour = self.hour.isoformat() if self.hour else ""
        text = "\x1f".join((self.kind, self.owner, self.a, self.b, hour))
        return hashlib.sha1(text.encode("utf-8")).hexdigest()


def key(kind: str, owner: object = "", a: object = "", b: object = "", hour=None) -> Key:
    """A key with its labels as the tables store them: text, cut to the column's size."""
    return Key(kind, _label(owner), _label(a), _label(b), hour_of(hour))


def _label(value: object) -> str:
    return "" if value is None else str(value)[:MAX_LABEL]


def reason_label(reason: str) -> str:
    """A reason as counted: its first characters, so one error met by many users is one line."""
    return (reason or "").strip()[:REASON_PREFIX]


def hour_of(moment: datetime | None) -> datetime | None:
    """The start of the hour (UTC) that `moment` falls in."""
    if moment is None:
        return None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def add(counts: Mapping[Key, int]) -> None:
    """Record the changes to these counts, in the caller's transaction."""
    rows = [(k, n) for k, n in counts.items() if n]
    if not rows:
        return
    params: list = []
    for k, n in rows:
        hour = connection.ops.adapt_datetimefield_value(k.hour) if k.hour else None
        params += [k.kind, k.owner, k.a, k.b, hour, n]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO tally_deltas (kind, owner, a, b, hour, n) VALUES {values}", params
        )


def difference(before: Iterable[Key], after: Iterable[Key]) -> Counter[Key]:
    """What moving a row from counting for `before` to counting for `after` changes."""
    change: Counter[Key] = Counter()
    for k in before:
        change[k] -= 1
    for k in after:
        change[k] += 1
    return change


class Want(NamedTuple):
    """Which tallies to read: a kind, one owner's or all owners', from an hour on or all."""

    kind: str
    owner: str | None = None
    since: datetime | None = None


def read(*wants: Want) -> Counter[Key]:
    """The current counts of the keys wanted, with the deltas not folded yet: one statement."""
    if not wants:
        return Counter()
    conditions, params = [], []
    for want in wants:
        sql, sql_params = "kind = %s", [want.kind]
        if want.owner is not None:
            sql, sql_params = sql + " AND owner = %s", [*sql_params, _label(want.owner)]
        if want.since is not None:
            since = connection.ops.adapt_datetimefield_value(hour_of(want.since))
            sql, sql_params = sql + " AND hour >= %s", [*sql_params, since]
        conditions.append(f"({sql})")
        params += sql_params
    where = " OR ".join(conditions)
    sql = (
        "SELECT kind, owner, a, b, hour, SUM(n) FROM ("
        f"SELECT kind, owner, a, b, hour, n FROM tallies WHERE {where} "
        f"UNION ALL SELECT kind, owner, a, b, hour, n FROM tally_deltas WHERE {where}"
        ") t GROUP BY kind, owner, a, b, hour"
    )
    counts: Counter[Key] = Counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, params + params)
        for kind, owner, a, b, hour, n in cursor.fetchall():
            if n:
                counts[Key(kind, owner, a, b, _as_datetime(hour))] = int(n)
    return counts


def _as_datetime(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text
        value = parse_datetime(value)
    return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value


def fold(limit: int = 20_000, now: datetime | None = None) -> int:
    """Fold up to `limit` deltas into the tallies, in one transaction. Returns how many.

    Deltas another transaction has not committed yet are locked by it and skipped (MySQL), or
    cannot exist while this one writes (SQLite's one writer): each is folded exactly once.
    """
    with transaction.atomic():
        rows = list(
            TallyDelta.objects.select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", "kind", "owner", "a", "b", "hour", "n")[:limit]
        )
        if not rows:
            return 0
        sums: Counter[Key] = Counter()
        for _, kind, owner, a, b, hour, n in rows:
            sums[Key(kind, owner, a, b, hour_of(hour))] += n
        _upsert(sums)
        ids = [row[0] for row in rows]
        for start in range(0, len(ids), 1000):
            TallyDelta.objects.filter(id__in=ids[start : start + 1000]).delete()
        _prune(now or timezone.now())
    return len(rows)


def _upsert(sums: Mapping[Key, int]) -> None:
    """Add `sums` to the tallies, creating missing keys; in key order, so that two folds at once
    lock rows in the same order and never deadlock."""
    items = sorted(((k.digest, k, n) for k, n in sums.items() if n), key=lambda item: item[0])
    if connection.vendor == "mysql":
        on_conflict = "ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
    else:
        on_conflict = "ON CONFLICT (key_hash) DO UPDATE SET n = n + excluded.n"
    with connection.cursor() as cursor:
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            params: list = []
            for digest, k, n in chunk:
                hour = connection.ops.adapt_datetimefield_value(k.hour) if k.hour else None
                params += [digest, k.kind, k.owner, k.a, k.b, hour, n]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO tallies (key_hash, kind, owner, a, b, hour, n) VALUES {values} "
                + on_conflict,
                params,
            )


def _prune(now: datetime) -> None:
    """Drop counts by the hour older than HOURLY_RETENTION, and empty totals, once an hour."""
    last = Heartbeat.objects.filter(name="tallies pruned").values_list("at", flat=True).first()
    if last is not None and now - last < timedelta(hours=1):
        return
    Tally.objects.filter(hour__lt=now - HOURLY_RETENTION).delete()
    Tally.objects.filter(n=0).delete()
    Heartbeat.objects.update_or_create(name="tallies pruned", defaults={"at": now})


def replace(kinds: Iterable[str], counts: Mapping[Key, int]) -> None:
    """Set the tallies of `kinds` to `counts` (a count from scratch), dropping their deltas.

    Run it while nothing else writes what these kinds count: a delta written meanwhile could be
    counted twice or not at all.
    """
    kinds = list(kinds)
    with transaction.atomic():
        Tally.objects.filter(kind__in=kinds).delete()
        TallyDelta.objects.filter(kind__in=kinds).delete()
        _upsert({k: n for k, n in counts.items() if k.kind in kinds})


def beat(name: str, at: datetime | None = None) -> None:
    """Record that `name` happened now (or at `at`)."""
    at = at or timezone.now()
    if not Heartbeat.objects.filter(name=name).update(at=at):
        Heartbeat.objects.get_or_create(name=name, defaults={"at": at})


def last_beat(name: str) -> datetime | None:
    return Heartbeat.objects.filter(name=name).values_list("at", flat=True).first()
