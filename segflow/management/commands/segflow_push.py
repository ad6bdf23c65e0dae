from django.core.management.base import BaseCommand, CommandError

from segflow.config import ConfigError, load_config
from segflow.push import PushError, push


class Command(BaseCommand):
    help = (
        "Apply the segflow config: add, change and remove segments, templates, transactions "
        "and campaigns."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the plan and change nothing."
        )
        parser.add_argument(
            "--config", help="The config to push (default: settings.SEGFLOW_CONFIG)."
        )

    def handle(self, *args, dry_run: bool = False, config: str | None = None, **options):
        from django.conf import settings

        location = config or settings.SEGFLOW_CONFIG
        try:
            loaded = load_config(location)
        except ConfigError as exc:
            raise CommandError(f"The config is not valid: {exc}") from exc
        self.stdout.write(f"Pushing {location}{' (dry run)' if dry_run else ''} ...")
        try:
            plan = push(loaded, dry_run=dry_run)
        except PushError as exc:
            raise CommandError(f"Nothing was pushed: {exc}") from exc
        self.stdout.write(plan.render())
        if plan.has_changes and not dry_run:
            self.stdout.write(self.style.SUCCESS("Pushed."))
