from __future__ import annotations

import os
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from delivery.models import OutboxEmail
from segflow.api_keys import create_api_key, forget_api_keys
from segflow.config import load_config
from segflow.live_config import live_config
from segflow.pipeline import tick
from segflow.push import push

# Property tests (tests/test_properties_*.py): "ci", the default, keeps no database of examples,
# so a run leaves nothing behind, and prints a blob that replays a failure
# (@reproduce_failure); HYPOTHESIS_PROFILE=dev keeps failing examples in .hypothesis/ to try
# them first next time. Each test sets its own number of examples.
hypothesis_settings.register_profile("ci", database=None, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "segflow_config.py"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_config():
    live_config.reset()
    yield
    live_config.reset()


@pytest.fixture(autouse=True)
def _fresh_api_keys():
    # Each test's keys are read afresh: a key cached by an earlier test (its database gone) is not.
    forget_api_keys()
    yield
    forget_api_keys()


@pytest.fixture
def api(db) -> APIClient:
    """An API client holding a valid key."""
    _, key = create_api_key("tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


class Clock:
    """The test's clock: time stands still until the test moves it."""

    def __init__(self, start: datetime) -> None:
        self._traveller = time_machine.travel(start, tick=False)
        self._frozen = self._traveller.start()

    @property
    def now(self) -> datetime:
        from django.utils import timezone

        return timezone.now()

    def move_to(self, when: datetime) -> None:
        self._frozen.move_to(when)

    def advance(self, **delta) -> None:
        self._frozen.shift(timedelta(**delta))

    def advance_and_tick(self, every: timedelta = timedelta(hours=1), **delta):
        """Let time pass with the scheduler running: a tick every `every`, and one at the end."""
        end = self.now + timedelta(**delta)
        while self.now + every < end:
            self.advance(seconds=every.total_seconds())
            tick()
        self.move_to(end)
        return tick()

    def stop(self) -> None:
        if self._frozen is not None:
            self._traveller.stop()
            self._frozen = None


@pytest.fixture
def clock():
    clock = Clock(START)
    yield clock
    clock.stop()


@pytest.fixture
def write_config(tmp_path):
    """Write a config file (and email templates beside it); returns its loaded Config."""

    def write(source: str, emails: dict[str, str] | None = None):
        path = tmp_path / "segflow_config.py"
        path.write_text(textwrap.dedent(source))
        for name, html in (emails or {}).items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(html)
        return load_config(str(path))

    return write


@pytest.fixture
def pushed(settings):
    """Load a config, make it this process's config, and push it."""

    def apply(config=None, **kwargs):
        if config is None:
            config = load_config(str(EXAMPLE_CONFIG))
        settings.SEGFLOW_CONFIG = config.location
        live_config.set(config)
        return push(config, **kwargs)

    return apply


def sent(user_id: str | None = None, **filters) -> list[str]:
    """Template names of the emails in the outbox, oldest first (all statuses)."""
    rows = OutboxEmail.objects.order_by("id")
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    return list(rows.filter(**filters).values_list("template_name", flat=True))
