from django.core.management.base import BaseCommand

from segflow.pipeline import tick


class Command(BaseCommand):
    help = (
        "Run all due work once: due campaign steps, time-based segments, missed tasks (for cron)."
    )

    def handle(self, *args, **options):
        report = tick()
        self.stdout.write(f"Tick done: {report}.")
