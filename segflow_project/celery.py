"""The Celery app. Workers and beat run it in production; the embedded default never starts it."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segflow_project.settings")

app = Celery("segflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
