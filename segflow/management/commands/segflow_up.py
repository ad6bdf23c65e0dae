import json
import secrets
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from segflow.api_keys import create_api_key, find_api_key
from segflow.models import Push


class Command(BaseCommand):
    help = (
        "Local development in one command: migrate, push the config, create a development API key "
        "and admin login (printed), then serve the API, the admin and the workers."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--no-serve", action="store_true", help="Set up, print, and stop.")
        parser.add_argument(
            "--config",
            help="The config to push and run (default: SEGFLOW_CONFIG if it is set, else the "
            "config of the last push, else the example).",
        )

    def handle(
        self,
        *args,
        addrport: str,
        no_serve: bool = False,
        config: str | None = None,
        **options,
    ):
        if not no_serve:
            _check_port_is_free(addrport)
        self.stdout.write("1/4 Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        location, why = _choose_config(config)
        self.stdout.write(f"2/4 Pushing the config: {why} ...")
        try:
            call_command("segflow_push", config=location, stdout=self.stdout)
        except CommandError as exc:
            if config or settings.SEGFLOW_CONFIG_IS_SET:
                raise
            raise CommandError(
                f"{exc}\nTo run another config, set SEGFLOW_CONFIG in .env (for the example: "
                f"SEGFLOW_CONFIG={_example_config()}), or pass --config."
            ) from exc
        self.stdout.write("3/4 Development login and API key ...")
        credentials = self._credentials()
        url = f"http://{addrport}"
        auth = f"Authorization: Bearer {credentials['api_key']}"
        self.stdout.write(
            "\n"
            f"  Admin:   {url}/admin/  user {credentials['username']!r}, "
            f"password {credentials['password']!r}\n"
            f"  API:     {url}/api/    Authorization: Bearer {credentials['api_key']}\n"
            f"  Config:  {location}\n"
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


def _example_config() -> Path:
    return Path(settings.BASE_DIR) / "examples" / "segflow_config.py"


def _same_location(a: str, b: str) -> bool:
    if a.endswith(".py") and b.endswith(".py"):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b


def _choose_config(given: str | None) -> tuple[str, str]:
    """The config a development run pushes and serves, and why that one.

    A run must not push the example over the config a user pushed themselves: that would
    remove their campaigns. So, unless told otherwise, it keeps to the last push's config.
    """
    if given:
        return given, "the one given with --config"
    last = Push.objects.order_by("-id").values_list("location", flat=True).first()
    if settings.SEGFLOW_CONFIG_IS_SET:
        why = "the one SEGFLOW_CONFIG names (in the environment or .env)"
        if last and not _same_location(last, settings.SEGFLOW_CONFIG):
            why += f"; the last push was of {last}, which this one replaces"
        return settings.SEGFLOW_CONFIG, why
    if last == "":
        raise CommandError(
            "The last push does not say where its config came from, and pushing the example "
            "would replace it. Set SEGFLOW_CONFIG in .env to the config to run (for the "
            f"example: SEGFLOW_CONFIG={_example_config()}), or pass --config."
        )
    if last is not None:
        return last, "the one last pushed (set SEGFLOW_CONFIG in .env to run another)"
    return settings.SEGFLOW_CONFIG, "the example (set SEGFLOW_CONFIG in .env to run your own)"


def _check_port_is_free(addrport: str) -> None:
    """Refuse before touching anything: a second run must not push over a running one."""
    host, _, port = addrport.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As the server does: a port whose last connections are in TIME_WAIT (a server stopped
        # a moment ago) is free to listen on; one another process listens on is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise CommandError(
                f"{addrport} is already in use (is segflow already running?). Stop the other "
                "server, or give another address: python3 dev.py up 127.0.0.1:8001"
            ) from exc
