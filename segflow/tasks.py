"""Celery tasks: thin wrappers over segflow.pipeline. Each one is safe to run twice."""

from celery import shared_task

from . import pipeline


@shared_task(name="segflow.process_event")
def process_event(event_id: int) -> None:
    pipeline.process_event(event_id)


@shared_task(name="segflow.evaluate_user")
def evaluate_user(user_id: str) -> None:
    pipeline.evaluate_user(user_id)


@shared_task(name="segflow.advance_cursor")
def advance_cursor(cursor_id: int) -> str:
    return pipeline.advance_cursor(cursor_id)


@shared_task(name="segflow.deliver_email")
def deliver_email(outbox_id: int) -> str:
    return pipeline.deliver_email(outbox_id)


@shared_task(name="segflow.run_due_cursors")
def run_due_cursors() -> int:
    return pipeline.run_due_cursors()


@shared_task(name="segflow.tick")
def tick() -> str:
    return str(pipeline.tick())
