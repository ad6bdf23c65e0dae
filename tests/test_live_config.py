"""A process runs the pushed config, or leaves the work that needs it pending: nothing is lost."""

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from segflow import users as user_service
from segflow.config import get_config, load_config, set_config
from segflow.models import Event

from .conftest import EXAMPLE_CONFIG, sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
config = {{
    "segments": {{"everyone": {{"sql": "SELECT u.id FROM users u"}}}},
    "transactions": {{
        "receipt": {{"event": "paid", "subject": "{subject}", "html": lambda u, e: "<p>ok</p>"}},
    }},
}}
"""


def test_work_waits_while_the_process_runs_another_config_and_goes_on_after(
    write_config, pushed, clock, settings
):
    pushed(write_config(CONFIG.format(subject="Receipt")))
    # The file on this machine changes, and is not pushed: the process cannot run the push.
    set_config(write_config(CONFIG.format(subject="Changed receipt")))
    user_service.put_user("bob", {"email": "bob@example.com"})
    event = user_service.record_event("bob", "paid", {})

    assert Event.objects.get(pk=event.pk).processed_at is None
    assert sent() == [] and mail.outbox == []
    with pytest.raises(CommandError, match="not the one last pushed"):
        call_command("segflow_tick")

    # Pushing the config it has makes it live; the schedule hands out the waiting work.
    pushed(get_config())
    clock.advance_and_tick(minutes=1)
    assert Event.objects.get(pk=event.pk).processed_at is not None
    assert [m.subject for m in mail.outbox] == ["Changed receipt"]


def test_a_process_started_with_another_config_loads_the_one_pushed_from_here(
    write_config, pushed, clock, settings
):
    config = write_config(CONFIG.format(subject="Receipt"))
    pushed(config)
    # A server started with the example config; the developer pushed their own file.
    settings.SEGFLOW_CONFIG = str(EXAMPLE_CONFIG)
    set_config(load_config(str(EXAMPLE_CONFIG)))
    user_service.record_event("carol", "paid", {})
    user_service.put_user("carol", {"email": "carol@example.com"})
    user_service.record_event("carol", "paid", {})
    assert get_config().location == config.location
    assert [m.subject for m in mail.outbox] == ["Receipt"]
