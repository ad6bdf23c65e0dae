import os

from django.core.management.base import BaseCommand, CommandError

from segflow.client import Client, SegflowError, push_lines
from segflow.config import ConfigError
from segflow.push import PushError, failure_message, push_location
from segflow.push import rollback as roll_back

from ..push_progress import PushProgress


class Command(BaseCommand):
    help = (
        "Apply the segflow config: add, change and remove segments, templates, transactions "
        "and campaigns, and store the config's files as a new version that every process runs. "
        "With --server, push to a running server over HTTP instead."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the plan and change nothing."
        )
        parser.add_argument(
            "--config", help="The config to push (default: settings.SEGFLOW_CONFIG)."
        )
        parser.add_argument(
            "--rollback",
            action="store_true",
            help="Apply again the version that was live before the current one (or --to N).",
        )
        parser.add_argument(
            "--to", type=int, metavar="N", help="With --rollback: the version to apply again."
        )
        parser.add_argument(
            "--server",
            metavar="URL",
            help="Push to the segflow server at URL (the key comes from SEGFLOW_PUSH_KEY); "
            "this machine's database is not used.",
        )
        parser.add_argument(
            "--progress-every",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="When the output is not a terminal (a CI log): print a line of the segments' "
            "evaluation at most this often, besides one as each segment is done (default 10).",
        )

    def handle(
        self,
        *args,
        dry_run: bool = False,
        config: str | None = None,
        rollback: bool = False,
        to: int | None = None,
        server: str | None = None,
        progress_every: float = 10.0,
        **options,
    ):
        from django.conf import settings

        if to is not None and not rollback:
            raise CommandError("--to goes with --rollback")
        if rollback and config:
            raise CommandError("--rollback applies a stored version; leave out --config")
        location = config or settings.SEGFLOW_CONFIG
        if server:
            return self._remote(server, location, dry_run, rollback, to)
        suffix = " (dry run)" if dry_run else ""
        try:
            # Progress goes to stderr: stdout keeps the plan alone, for a script to read.
            with PushProgress(self.stderr, every=progress_every) as progress:
                if rollback:
                    what = f"version {to}" if to else "the previous version"
                    self.stdout.write(f"Rolling back to {what}{suffix} ...")
                    plan = roll_back(to, dry_run=dry_run, progress=progress)
                else:
                    self.stdout.write(f"Pushing {location}{suffix} ...")
                    plan = push_location(location, dry_run=dry_run, progress=progress)
        except (ConfigError, PushError) as exc:
            raise CommandError(failure_message(exc)) from exc
        for warning in plan.warnings:
            self.stdout.write(self.style.WARNING(f"Warning: {warning}"))
        self.stdout.write(plan.render())
        if plan.outcome():
            self.stdout.write(self.style.SUCCESS(plan.outcome()))

    def _remote(self, server, location, dry_run, rollback, to):
        key = os.environ.get("SEGFLOW_PUSH_KEY", "")
        if not key.strip():
            raise CommandError(
                "Set SEGFLOW_PUSH_KEY to a key of the scope `push` (on the server: manage.py "
                "segflow_create_api_key NAME --scope push)"
            )
        try:
            client = Client(url=server, api_key=key)
            for line in push_lines(client, location, dry_run, rollback, to):
                self.stdout.write(line)
        except (SegflowError, ValueError) as exc:
            raise CommandError(getattr(exc, "message", None) or str(exc)) from exc
