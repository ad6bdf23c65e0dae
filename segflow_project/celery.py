"""The Celery app. Workers and beat run it in production; the embedded default never starts it."""

import os

from celery import Celery, bootsteps, signals
from celery.exceptions import ImproperlyConfigured
from click import Option

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segflow_project.settings")

app = Celery("segflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes the database connection before and after every task unless told
# to reuse it, which made every task connect to the database again. Reuse it; the handlers below
# close it only when it is broken or older than CONN_MAX_AGE, as Django does around requests.
app.conf.CELERY_DB_REUSE_MAX = 1_000_000_000
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.worker_process_init.connect
def _settle_collector(**kwargs) -> None:
    # In the main process before it forks the pool (the children share what it froze), and in
    # each child once it has set up.
    from segflow import collector

    collector.settle()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    from django.db import close_old_connections

    close_old_connections()


app.user_options["worker"].add(
    Option(
        ("--beat-thread",),
        is_flag=True,
        default=False,
        help="Run beat's schedule in a thread of this worker, not in a process of its own "
        "(as -B does): about 100 MB less. Exactly one worker or beat in the deployment.",
    )
)


class BeatThread(bootsteps.StartStopStep):
    """Beat inside the worker's main process. `-B` forks a whole Django for it; beat only puts a
    tick on the queue every SEGFLOW_TICK_SECONDS, which a thread does as well."""

    label = "segflow beat thread"
    conditional = True
    # After the pool: prefork's children are forked before the thread exists.
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, beat_thread: bool = False, **options) -> None:
        if beat_thread and options.get("beat"):
            raise ImproperlyConfigured("--beat-thread and -B both start beat: choose one")
        self.enabled = beat_thread
        super().__init__(worker, **options)

    def create(self, worker):
        from celery.beat import EmbeddedService

        return EmbeddedService(
            worker.app,
            thread=True,
            schedule_filename=worker.schedule_filename,
            scheduler_cls=worker.scheduler,
        )


app.steps["worker"].add(BeatThread)
