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
import os
import threading
import time

from celery import current_app, current_task
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


# The work each task hands on that its worker runs itself (SEGFLOW_WORKER_FOLLOW_ON): a drain's
# new cursors, an advance's emails. Not the tick's: its hand-outs are what spreads due work over
# all the workers.
FOLLOW_ON = {
    TASK_PREFIX + "drain_users": {"advance_cursors", "deliver_emails"},
    TASK_PREFIX + "drain_events": {"advance_cursors", "deliver_emails"},
    TASK_PREFIX + "advance_cursors": {"deliver_emails"},
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
    if not settings.SEGFLOW_TASKS_INLINE and not _follows_on(task_name):
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


def _follows_on(task_name: str) -> bool:
    """Whether this process runs `task_name` itself, as the follow-on of the task it is running."""
    running = getattr(current_task, "name", None)  # (None outside a task)
    return settings.SEGFLOW_WORKER_FOLLOW_ON and task_name in FOLLOW_ON.get(running, ())


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


# ---------------------------------------------------------------------------------------------
# Queues kept in the database: events and users waiting for evaluation.
#
# An accepted event is a committed row with an empty `processed_at`, and a changed user a row with
# `evaluation_pending` set: the database is the queue, and workers drain it in batches (see
# `segflow.pipeline.drain_events`). With a broker, a write only rings a doorbell: a flag in
# this process that a background thread turns into at most one drain task on the broker per
# queue at a time, whatever the request rate. Without one, the write's own rows are processed
# in this process after commit, as any other task.

DRAIN_TASKS = {"events": "drain_events", "users": "drain_users"}
INLINE_TASKS = {"events": "process_events", "users": "evaluate_users"}


def wake(queue: str, ids: list) -> None:
    """Work was added to `queue` ("events" or "users"): its rows, `ids`, are committed."""
    if settings.SEGFLOW_TASKS_INLINE:
        enqueue_in_batches(INLINE_TASKS[queue], ids)
        return
    _doorbell().ring(queue)


def drain_started(queue: str) -> None:
    """A drain of `queue` begins: the next ring hands out another drain task (for what arrives
    after this one has looked)."""
    if not settings.SEGFLOW_TASKS_INLINE:
        _doorbell().answered(queue)


def ring_again(queue: str) -> None:
    """A drain stops with work left: hand out the next drain task now, unless one waits."""
    if not settings.SEGFLOW_TASKS_INLINE:
        _doorbell().publish(queue)


class Doorbell:
    """Turns many rings into few drain tasks.

    Rings set a flag; one daemon thread per process publishes. With a Redis broker, a key per
    queue (set while a drain task waits on the broker, deleted when it starts) lets every
    process see that one is already waiting, so the broker holds at most one waiting drain task
    per queue; the key expires after SEGFLOW_DOORBELL_LEASE_SECONDS in case that task is lost.
    A drain that starts looks at everything committed before it, so nothing rung before its
    start is missed, and what is rung after finds the key gone and hands out the next one.
    """

    def __init__(self, broker_url: str) -> None:
        self._pid = os.getpid()
        self.broker_url = broker_url
        self._rung: set[str] = set()
        self._lock = threading.Lock()
        self._ringing = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis = None
        if broker_url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            timeout = settings.SEGFLOW_BROKER_TIMEOUT_SECONDS
            self._redis = redis.Redis.from_url(
                broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )

    def ring(self, queue: str) -> None:
        if not settings.SEGFLOW_DOORBELL_THREAD:
            self.publish(queue)
            return
        with self._lock:
            self._rung.add(queue)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="segflow-doorbell", daemon=True
                )
                self._thread.start()
        self._ringing.set()

    def answered(self, queue: str) -> None:
        if self._redis is not None:
            try:
                self._redis.delete(_doorbell_key(queue))
            except Exception as exc:
                logger.warning("could not clear the %s doorbell: %s", queue, exc)

    def _run(self) -> None:
        pause = settings.SEGFLOW_DOORBELL_PAUSE_SECONDS
        while True:
            self._ringing.wait()
            self._ringing.clear()
            with self._lock:
                rung, self._rung = self._rung, set()
            for queue in sorted(rung):
                try:
                    self.publish(queue)
                except Exception:
                    # Never let the thread die: the tick rings every queue again.
                    logger.exception("the %s doorbell failed", queue)
            time.sleep(pause)

    def publish(self, queue: str) -> bool:
        """Hand out one drain task for `queue`, unless one is already waiting for a worker."""
        if settings.SEGFLOW_TASKS_INLINE:
            return True  # the settings changed under a running process (tests do)
        if self._redis is not None:
            lease = int(settings.SEGFLOW_DOORBELL_LEASE_SECONDS * 1000)
            try:
                if not self._redis.set(_doorbell_key(queue), 1, nx=True, px=lease):
                    return True
            except Exception as exc:
                logger.warning("the %s doorbell could not reach Redis (%s)", queue, exc)
        if enqueue(DRAIN_TASKS[queue]):
            return True
        if self._redis is not None:
            try:
                self._redis.delete(_doorbell_key(queue))
            except Exception:
                pass  # the key expires with its lease
        return False


def _doorbell_key(queue: str) -> str:
    return f"segflow:doorbell:{queue}"


_doorbell_instance: Doorbell | None = None
_doorbell_lock = threading.Lock()


def _doorbell() -> Doorbell:
    """This process's doorbell (a forked process gets its own thread and connection)."""
    global _doorbell_instance
    url = current_app.conf.broker_url
    url = url if isinstance(url, str) else ""  # (a test's stand-in for the app)
    bell = _doorbell_instance
    if bell is None or bell._pid != os.getpid() or bell.broker_url != url:
        with _doorbell_lock:
            bell = _doorbell_instance
            if bell is None or bell._pid != os.getpid() or bell.broker_url != url:
                bell = _doorbell_instance = Doorbell(url)
    return bell


def ring_all() -> None:
    """Hand out a drain of every queue now (the schedule's tick: a lost ring is found here)."""
    if settings.SEGFLOW_TASKS_INLINE:
        return
    bell = _doorbell()
    for queue in DRAIN_TASKS:
        bell.publish(queue)
