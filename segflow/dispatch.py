"""Handing background work out: to Celery workers when a broker is set, in this process when not.

Work is named, not imported: the kernel and the domain apps ask for `process_events` or
`deliver_emails` by name, and `segflow.tasks` (an edge) defines what runs under each name. So
nothing below the edges depends on the tasks module.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.conf import settings

logger = logging.getLogger(__name__)

TASK_PREFIX = "segflow."


def enqueue(task_name: str, *args) -> None:
    """Run the task `segflow.<task_name>` with `args`, now (embedded) or on a worker.

    Called from `transaction.on_commit`, so a worker never looks for rows that are not committed.
    An inline task that fails is logged; the schedule's sweep runs its work again later.
    """
    name = TASK_PREFIX + task_name
    if not settings.SEGFLOW_TASKS_INLINE:
        current_app.send_task(name, args=args)
        return
    task = current_app.tasks[name]
    try:
        task.run(*args)
    except Exception:
        if settings.SEGFLOW_INLINE_TASKS_RAISE:
            raise
        logger.exception("task %s%r failed; the schedule will try again", task_name, args)


def enqueue_in_batches(task_name: str, ids: list) -> None:
    """Hand `ids` to the task `segflow.<task_name>`, SEGFLOW_BATCH_SIZE ids to a call."""
    size = settings.SEGFLOW_BATCH_SIZE
    for start in range(0, len(ids), size):
        enqueue(task_name, ids[start : start + size])
