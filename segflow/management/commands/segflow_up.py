import json
import secrets
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from segflow.api_keys import create_api_key, find_api_key


class Command(BaseCommand):
    help = (
        "Local development in one command: migrate, push the config, create a development API key "
        "and admin login (printed), then serve the API, the admin and the workers."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--no-serve", action="store_true", help="Set up, print, and stop.")

    def handle(self, *args, addrport: str, no_serve: bool = False, **options):
        if not no_serve:
            _check_port_is_free(addrport)
        self.stdout.write("1/4 Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("2/4 Pushing the config ...")
        call_command("segflow_push", stdout=self.stdout)
        self.stdout.write("3/4 Development login and API key ...")
        credentials = self._credentials()
        url = f"http://{addrport}"
        auth = f"Authorization: Bearer {credentials['api_key']}"
        self.stdout.write(
            "\n"
            f"  Admin:   {url}/admin/  user {credentials['username']!r}, "
            f"password {credentials['password']!r}\n"
            f"  API:     {url}/api/    Authorization: Bearer {credentials['api_key']}\n"
            "  Try it:\n"
            f"    curl -X PUT {url}/api/users/jane -H '{auth}' -H 'Content-Type: application/json' "
            '-d \'{"attributes": {"email": "jane@example.com", "name": "Jane"}}\'\n'
            f"    curl -X POST {url}/api/users/jane/events -H '{auth}' "
            "-H 'Content-Type: application/json' -d '{\"name\": \"purchase\"}'\n"
            f"  (kept in {settings.SEGFLOW_DEV_CREDENTIALS_FILE})\n"
        )
        if no_serve:
            return
        self.stdout.write("4/4 Serving; emails are printed here. Stop with Ctrl-C.")
        call_command("segflow_serve", addrport)

    def _credentials(self) -> dict:
        saved = {}
        credentials_file = Path(settings.SEGFLOW_DEV_CREDENTIALS_FILE)
        if credentials_file.exists():
            saved = json.loads(credentials_file.read_text())
        User = get_user_model()
        admin = User.objects.filter(username=saved.get("username", "admin")).first()
        if admin is None or not admin.check_password(saved.get("password", "")):
            password = secrets.token_urlsafe(12)
            if admin is None:
                admin = User.objects.create_superuser("admin", "admin@localhost", password)
            else:
                admin.set_password(password)
                admin.save()
            saved.update(username=admin.username, password=password)
        if not saved.get("api_key") or find_api_key(saved["api_key"]) is None:
            _, saved["api_key"] = create_api_key("development")
        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(saved, indent=2))
        credentials_file.chmod(0o600)
        return saved


def _check_port_is_free(addrport: str) -> None:
    """Refuse before touching anything: a second run must not push over a running one."""
    host, _, port = addrport.rpartition(":")
    with socket.socket() as probe:
        try:
            probe.bind((host or "127.0.0.1", int(port)))
        except OSError as exc:
            raise CommandError(
                f"{addrport} is already in use (is segflow already running?). Stop the other "
                "server, or give another address: python3 dev.py up 127.0.0.1:8001"
            ) from exc
