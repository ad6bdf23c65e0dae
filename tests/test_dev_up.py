"""`segflow_up`, which `python3 dev.py` runs: a second run keeps the user's config, and a port
freed a moment ago is free."""

from __future__ import annotations

import socket
import textwrap
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import Campaign
from segflow.management.commands.segflow_up import _check_port_is_free
from segflow.models import Push

from .conftest import EXAMPLE_CONFIG

OWN_CONFIG = """
def greet(ctx, rt):
    yield rt.send_email("hello")


config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>Hello</p>"}},
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"greeting": {"segments": ["everyone"], "behavior": "static", "flow": greet}},
}
"""


@pytest.fixture
def own_config(tmp_path) -> str:
    path = tmp_path / "my_config.py"
    path.write_text(textwrap.dedent(OWN_CONFIG))
    return str(path)


@pytest.fixture
def up(db, settings, tmp_path):
    """Run `segflow_up --no-serve` as a user with no SEGFLOW_CONFIG would; returns its output."""
    settings.SEGFLOW_CONFIG = str(EXAMPLE_CONFIG)
    settings.SEGFLOW_CONFIG_IS_SET = False
    settings.SEGFLOW_DEV_CREDENTIALS_FILE = str(tmp_path / "credentials.json")

    def run(*args: str) -> str:
        out = StringIO()
        call_command("segflow_up", "--no-serve", *args, stdout=out)
        return out.getvalue()

    return run


def active_campaigns() -> set[str]:
    return set(Campaign.objects.filter(active=True).values_list("name", flat=True))


def test_a_first_run_pushes_the_example_and_says_so(up):
    output = up()
    assert "the example (set SEGFLOW_CONFIG in .env to run your own)" in output
    assert f"Config:  {EXAMPLE_CONFIG}" in output
    assert active_campaigns() == {"onboarding", "winback-campaign", "abandoned-cart"}


def test_a_second_run_keeps_the_config_the_user_pushed(up, own_config):
    up()
    call_command("segflow_push", "--config", own_config, stdout=StringIO())
    assert active_campaigns() == {"greeting"}
    pushes = Push.objects.count()

    output = up()

    assert "2/4 Pushing the config: the one last pushed" in output
    assert f"Pushing {own_config} ..." in output
    assert f"Nothing to change: what is stored already matches {own_config}." in output
    assert f"Config:  {own_config}" in output
    assert active_campaigns() == {"greeting"}
    assert Push.objects.count() == pushes


def test_SEGFLOW_CONFIG_chooses_the_config_over_the_last_push(up, own_config, settings):
    up()
    settings.SEGFLOW_CONFIG = own_config
    settings.SEGFLOW_CONFIG_IS_SET = True

    output = up()

    assert "the one SEGFLOW_CONFIG names" in output
    assert f"the last push was of {EXAMPLE_CONFIG}, which this one replaces" in output
    assert active_campaigns() == {"greeting"}


def test_config_option_chooses_the_config(up, own_config):
    up()
    assert "the one given with --config" in up("--config", own_config)
    assert active_campaigns() == {"greeting"}


def test_a_last_push_that_cannot_be_loaded_stops_the_run_instead_of_pushing_the_example(
    up, own_config
):
    up("--config", own_config)
    Push.objects.update(location="/srv/segflow/gone/segflow_config.py")

    with pytest.raises(CommandError, match="set SEGFLOW_CONFIG in .env") as error:
        up()

    assert "no file at /srv/segflow/gone/segflow_config.py" in str(error.value)
    assert active_campaigns() == {"greeting"}


def _time_wait_port() -> int:
    """A port on 127.0.0.1 nobody listens on, whose last connection is in TIME_WAIT: what a
    server that served a request and was stopped a moment ago leaves behind."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()
    return port


def test_a_port_in_time_wait_is_free(db):
    port = _time_wait_port()
    with socket.socket() as plain:  # the check is worth having: a plain bind fails here
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    _check_port_is_free(f"127.0.0.1:{port}")


def test_a_port_something_listens_on_is_not_free(db):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(CommandError, match=f"127.0.0.1:{port} is already in use"):
            _check_port_is_free(f"127.0.0.1:{port}")
