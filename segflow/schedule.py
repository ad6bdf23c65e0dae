"""The periodic work beat runs in production, kept in django-celery-beat's tables.

Created when missing by `migrate` and by `segflow_push`; an operator may then tune the interval
in the admin, and segflow leaves their change alone.
"""

from __future__ import annotations

from django.conf import settings

TICK_TASK_NAME = "segflow: tick"


def ensure_periodic_tasks(**kwargs) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = max(1, round(settings.SEGFLOW_TICK_SECONDS))
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=every, period=IntervalSchedule.SECONDS
    )
    task, created = PeriodicTask.objects.get_or_create(
        name=TICK_TASK_NAME,
        defaults={
            "task": "segflow.tick",
            "interval": interval,
            # A tick queued while no worker ran is stale by the time one starts: drop it.
            "expire_seconds": max(30, every * 10),
            "description": "Due campaign steps, time-based segments, and missed work.",
        },
    )
    if not created and task.task != "segflow.tick":
        task.task = "segflow.tick"
        task.save(update_fields=["task"])
