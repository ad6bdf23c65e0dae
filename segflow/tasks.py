"""Celery tasks: thin wrappers over segflow.pipeline. Each one is safe to run twice."""

from celery import shared_task
from django.db import OperationalError

from . import pipeline

# A deadlock or lock timeout between workers is worth one more try soon; anything else waits
# for the schedule's sweep, which hands the work out again.
RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 1,
    "retry_jitter": True,
    "max_retries": 3,
}


@shared_task(name="segflow.process_events", **RETRY)
def process_events(event_ids: list[int]) -> None:
    pipeline.process_events(event_ids)


@shared_task(name="segflow.evaluate_user", **RETRY)
def evaluate_user(user_id: str) -> None:
    pipeline.evaluate_user(user_id)


@shared_task(name="segflow.evaluate_users", **RETRY)
def evaluate_users(user_ids: list[str]) -> None:
    pipeline.evaluate_users(user_ids)


@shared_task(name="segflow.drain_events", **RETRY)
def drain_events() -> int:
    return pipeline.drain_events()


@shared_task(name="segflow.drain_users", **RETRY)
def drain_users() -> int:
    return pipeline.drain_users()


@shared_task(name="segflow.advance_cursors", **RETRY)
def advance_cursors(cursor_ids: list[int]) -> dict[int, str]:
    return pipeline.advance_cursors(cursor_ids)


# Not retried: a row that left `queued` is never sent again; the sweep picks up the rest.
@shared_task(name="segflow.deliver_emails")
def deliver_emails(outbox_ids: list[int]) -> dict[int, str]:
    return pipeline.deliver_emails(outbox_ids)


@shared_task(name="segflow.refresh_time_segment", **RETRY)
def refresh_time_segment(segment_id: int) -> None:
    pipeline.refresh_time_segment(segment_id)


@shared_task(name="segflow.refresh_segment_range", **RETRY)
def refresh_segment_range(segment_id: int, low: str | None, high: str | None) -> None:
    pipeline.refresh_segment_range(segment_id, low, high)


@shared_task(name="segflow.run_due_cursors")
def run_due_cursors() -> int:
    return pipeline.run_due_cursors()


@shared_task(name="segflow.tick")
def tick() -> str:
    return str(pipeline.tick())
