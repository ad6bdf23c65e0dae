from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from segflow.runner import Ticker


class Command(BaseCommand):
    help = (
        "Serve the API and the admin with segflow's work done in this process: tasks run inline "
        "and a ticker runs the schedule (the embedded default)."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options):
        if not settings.SEGFLOW_TASKS_INLINE:
            self.stderr.write(
                "CELERY_BROKER_URL is set: tasks go to Celery workers, and beat keeps the "
                "schedule. The ticker is not started here."
            )
            ticker = None
        else:
            ticker = Ticker(settings.SEGFLOW_TICK_SECONDS)
            ticker.start()
        try:
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if ticker is not None:
                ticker.stop()
