"""Keeping the admin's figures: what each tick does for them, and counting everything again.

At the end of every tick (`pipeline.tick`), `after_tick` records that the schedule ticked (the
home page warns when it is late), folds the counts written since the last tick into the tallies
(segflow/tallies.py), and snapshots every segment's size after each push and once an hour.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from django.utils import timezone

from campaigns import tallies as campaign_tallies
from delivery import tallies as email_tallies
from segments import history
from segments import tallies as segment_tallies
from segments.models import SegmentSnapshot

from . import tallies
from .models import Push

logger = logging.getLogger(__name__)

TICK = tallies.TICK
SNAPSHOTS = "segment snapshots"
COUNTED = "tallies counted"
APPS = (campaign_tallies, email_tallies, segment_tallies)


def after_tick(now: datetime | None = None) -> None:
    """The admin's share of a tick; a failure here is logged and never stops the tick's work."""
    now = now or timezone.now()
    try:
        tallies.beat(TICK, now)
        for _ in range(10):  # up to 200,000 deltas a tick; the rest next time
            if tallies.fold(now=now) < 20_000:
                break
        last = tallies.last_beat(SNAPSHOTS)
        pushed = Push.objects.order_by("-id").values_list("created_at", flat=True).first()
        if pushed is not None and (last is None or pushed > last):
            history.snapshot_all(now, SegmentSnapshot.Occasion.PUSH)
            tallies.beat(SNAPSHOTS, now)
        elif last is None or now - last >= timedelta(hours=1):
            history.snapshot_all(now)
            tallies.beat(SNAPSHOTS, now)
    except Exception:
        logger.exception("keeping the admin's counts failed; the next tick tries again")


def rebuild_tallies() -> int:
    """Count everything again from the tables and replace every tally. Returns the number of
    keys. Run it while no worker writes (after a bulk load, or to repair counts)."""
    counts: Counter = Counter()
    kinds: list[str] = []
    for app in APPS:
        counts.update(app.recount())
        kinds += app.KINDS
    tallies.replace(kinds, counts)
    tallies.beat(COUNTED)
    return len(counts)


def ensure_tallies(**kwargs) -> None:
    """After `migrate`: count everything once, on a database whose tallies were never counted
    (a new install, or one upgraded from before tallies)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        return  # migrated to an earlier state: the tables may not be what the counts read
    if tallies.last_beat(COUNTED) is None:
        keys = rebuild_tallies()
        logger.info("counted the admin's figures from the tables: %s keys", keys)
