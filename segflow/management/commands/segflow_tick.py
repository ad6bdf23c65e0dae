from django.core.management.base import BaseCommand, CommandError

from segflow.pipeline import tick


class Command(BaseCommand):
    help = (
        "Run all due work once: due campaign steps, time-based segments, missed tasks (for cron)."
    )

    def handle(self, *args, **options):
        report = tick()
        self.stdout.write(f"Tick done: {report}.")
        if not report.config_is_live:
            raise CommandError(
                "This process could not load the config last pushed (the error is logged above), "
                "so segments and new events wait. Push a config that loads here, or roll back."
            )
