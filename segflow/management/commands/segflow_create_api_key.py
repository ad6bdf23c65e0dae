from django.core.management.base import BaseCommand, CommandError

from segflow.api_keys import SCOPES, create_api_key


class Command(BaseCommand):
    help = "Create an API key for the HTTP API and print it (it is shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Who or what the key is for, e.g. 'backend-production'.")
        parser.add_argument(
            "--scope",
            choices=SCOPES,
            default="ingest",
            help="ingest (the default): the users and events API, for app backends. push: "
            "pushing configs (segflow_push --server), for CI; it runs code on the workers.",
        )

    def handle(self, *args, name: str, scope: str = "ingest", **options):
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("NAME must be 1 to 100 characters.")
        row, key = create_api_key(name, scope)
        self.stdout.write(
            f"API key {row.name!r} (scope {row.scope}) created. Keep it now; it is not shown again:"
        )
        self.stdout.write(key)
