from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from delivery.unsubscribe import unsubscribe_url
from segflow.config import ConfigError, load_config
from segflow.live_config import live_config
from templates.preview import PreviewError, preview_email
from templates.rendering import RenderError


class Command(BaseCommand):
    help = "Render a template (or a transaction's email) for a real user to an HTML file."

    def add_arguments(self, parser):
        parser.add_argument("template", help="a template or transaction name from the config")
        parser.add_argument("--user", required=True, help="the id of the user to render it for")
        parser.add_argument("--event", type=int, help="for a transaction: the event id to use")
        parser.add_argument("--output", "-o", help="the HTML file to write")
        parser.add_argument(
            "--config", help="the config to read (default: the version last pushed)"
        )

    def handle(self, *args, **options):
        try:
            config = load_config(options["config"]) if options["config"] else live_config.sync()
            preview = preview_email(
                config,
                options["template"],
                options["user"],
                options["event"],
                unsubscribe_url=lambda user_id: unsubscribe_url(
                    user_id, f"preview:{options['template']}"
                ),
            )
        except (ConfigError, PreviewError, RenderError) as exc:
            raise CommandError(str(exc)) from exc
        default = Path("var") / "previews" / f"{options['template']}-{options['user']}.html"
        output = Path(options["output"] or default)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(preview.email.html, encoding="utf-8")
        output.with_suffix(".txt").write_text(preview.email.text, encoding="utf-8")
        event = f", event {preview.event.pk}" if preview.event else ""
        self.stdout.write(f"Subject: {preview.email.subject}")
        self.stdout.write(f"Wrote {output} (HTML) and {output.with_suffix('.txt')} (text){event}.")
