"""The periodic work beat runs in production, kept in django-celery-beat's tables.

Created when missing by `migrate` and by `segflow_push`, which also keep its interval at
SEGFLOW_TICK_SECONDS: the admin shows beat's tables read-only, so the setting is the one place
to change how often the schedule ticks.
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
    if created:
        return
    changed = []
    if task.task != "segflow.tick":
        task.task, changed = "segflow.tick", [*changed, "task"]
    if task.interval_id != interval.pk:
        task.interval, task.expire_seconds = interval, max(30, every * 10)
        changed += ["interval", "expire_seconds"]
    if changed:
        task.save(update_fields=changed)
