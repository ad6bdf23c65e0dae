"""Running background work: on Celery workers when a broker is set, in this process when not."""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)


def enqueue(task_name: str, *args) -> None:
    """Run the task `segflow.tasks.<task_name>` with `args`, now (embedded) or on a worker.

    Called from `transaction.on_commit`, so a worker never looks for rows that are not committed.
    An inline task that fails is logged; the schedule's sweep runs its work again later.
    """
    from . import tasks

    task = getattr(tasks, task_name)
    if not settings.SEGFLOW_TASKS_INLINE:
        task.delay(*args)
        return
    try:
        task.run(*args)
    except Exception:
        if settings.SEGFLOW_INLINE_TASKS_RAISE:
            raise
        logger.exception("task %s%r failed; the schedule will try again", task_name, args)


def enqueue_in_batches(task_name: str, ids: list) -> None:
    """Hand `ids` to the task `segflow.tasks.<task_name>`, SEGFLOW_BATCH_SIZE ids to a call."""
    size = settings.SEGFLOW_BATCH_SIZE
    for start in range(0, len(ids), size):
        enqueue(task_name, ids[start : start + size])
