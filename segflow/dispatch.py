"""Handing background work out: to Celery workers when a broker is set, in this process when not.

Work is named, not imported: the kernel and the domain apps ask for `process_events` or
`deliver_emails` by name, and `segflow.tasks` (an edge) defines what runs under each name. So
nothing below the edges depends on the tasks module.

Handing work out is best effort. It runs after the commit of the write that asked for it, and
every piece of work leaves a mark in the database until it is done (an event's empty
`processed_at`, a user's `evaluation_pending`, a `queued` email, a due cursor), which the
schedule's sweep hands out again. So a broker that is down or hangs must never turn a write that
committed into an error: publishing gives up after SEGFLOW_BROKER_TIMEOUT_SECONDS, the failure
is logged, and the caller learns that the work was not handed out (and may release what it had
claimed for it).
"""

from __future__ import annotations

import logging

from celery import current_app
from django.conf import settings

logger = logging.getLogger(__name__)

TASK_PREFIX = "segflow."

# One attempt, bounded by the socket timeouts of CELERY_BROKER_TRANSPORT_OPTIONS: kombu's default
# policy retries three more times, and without it the connection is retried for longer still.
PUBLISH_RETRY_POLICY = {
    "max_retries": 0,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}


class NotHandedOut(Exception):
    """The broker did not take the task (it is down, or did not answer in time)."""


def enqueue(task_name: str, *args) -> bool:
    """Run the task `segflow.<task_name>` with `args`, now (embedded) or on a worker.

    Called from `transaction.on_commit`, so a worker never looks for rows that are not committed.
    Never raises (unless SEGFLOW_INLINE_TASKS_RAISE): returns False if the work was not handed
    out, because the broker did not take it or the inline task failed. Either is logged; the
    schedule's sweep hands the work out again later.
    """
    try:
        _hand_out(task_name, args)
    except NotHandedOut:
        return False
    return True


def _hand_out(task_name: str, args: tuple) -> None:
    name = TASK_PREFIX + task_name
    if not settings.SEGFLOW_TASKS_INLINE:
        try:
            current_app.send_task(name, args=args, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
        except Exception as exc:
            logger.warning(
                "task %s%s not handed to the broker (%s: %s); the schedule will hand it out "
                "again once the broker answers",
                task_name,
                _shown(args),
                type(exc).__name__,
                exc,
            )
            raise NotHandedOut(task_name) from exc
        return
    task = current_app.tasks[name]
    try:
        task.run(*args)
    except Exception as exc:
        if settings.SEGFLOW_INLINE_TASKS_RAISE:
            raise
        logger.exception("task %s%s failed; the schedule will try again", task_name, _shown(args))
        raise NotHandedOut(task_name) from exc


def enqueue_in_batches(task_name: str, ids: list) -> list:
    """Hand `ids` to the task `segflow.<task_name>`, SEGFLOW_BATCH_SIZE ids to a call.

    Returns the ids that were not handed out (empty when all were). With a broker, the first
    batch it refuses ends the hand-out: the broker is down, and trying the other batches would
    only wait out its timeout again for each.
    """
    size = settings.SEGFLOW_BATCH_SIZE
    left: list = []
    for start in range(0, len(ids), size):
        batch = ids[start : start + size]
        if not enqueue(task_name, batch):
            if not settings.SEGFLOW_TASKS_INLINE:
                return left + list(ids[start:])
            left += batch
    return left


def enqueue_each(task_name: str, items: list) -> list:
    """Hand each item to the task `segflow.<task_name>` on its own; returns the items that were
    not handed out (with a broker, the first refusal ends the hand-out, as above)."""
    left: list = []
    for n, item in enumerate(items):
        if not enqueue(task_name, item):
            if not settings.SEGFLOW_TASKS_INLINE:
                return left + list(items[n:])
            left.append(item)
    return left


def broker_problem(timeout: float) -> str | None:
    """None if the broker answers within `timeout` seconds, else what is wrong (for readiness).
    Without a broker (the embedded default) there is nothing to check."""
    if settings.SEGFLOW_TASKS_INLINE:
        return None
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    connection = current_app.connection_for_write(
        url=settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options
    )
    try:
        connection.ensure_connection(max_retries=0, timeout=timeout)
        connection.default_channel  # noqa: B018 - opening a channel talks to the broker
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.release()
    return None


def _shown(args: tuple) -> str:
    text = repr(args)
    return text if len(text) <= 200 else text[:200] + "…)"
