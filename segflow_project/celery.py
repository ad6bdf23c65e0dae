"""The Celery app. Workers and beat run it in production; the embedded default never starts it."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segflow_project.settings")

app = Celery("segflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes the database connection before and after every task unless told
# to reuse it, which made every task connect to the database again. Reuse it; the handlers below
# close it only when it is broken or older than CONN_MAX_AGE, as Django does around requests.
app.conf.CELERY_DB_REUSE_MAX = 1_000_000_000
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    from django.db import close_old_connections

    close_old_connections()
