"""A process runs the pushed config, or leaves the work that needs it pending: nothing is lost."""

import os

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from segflow import users as user_service
from segflow.config import load_config
from segflow.live_config import live_config
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
    live_config.set(write_config(CONFIG.format(subject="Changed receipt")))
    user_service.put_user("bob", {"email": "bob@example.com"})
    event = user_service.record_event("bob", "paid", {})

    assert Event.objects.get(pk=event.pk).processed_at is None
    assert sent() == [] and mail.outbox == []
    with pytest.raises(CommandError, match="not the one last pushed"):
        call_command("segflow_tick")

    # Pushing the config it has makes it live; the schedule hands out the waiting work.
    pushed(live_config.current())
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
    live_config.set(load_config(str(EXAMPLE_CONFIG)))
    user_service.record_event("carol", "paid", {})
    user_service.put_user("carol", {"email": "carol@example.com"})
    user_service.record_event("carol", "paid", {})
    assert live_config.current().location == config.location
    assert [m.subject for m in mail.outbox] == ["Receipt"]


@pytest.fixture
def redis_broker(settings):
    """Tasks go to a real Redis (a database of its own) instead of running in this process."""
    import redis

    from segflow_project.celery import app

    server = os.environ.get("SEGFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/11").rsplit("/", 1)[0]
    queue = redis.Redis.from_url(f"{server}/12")
    queue.flushdb()
    settings.SEGFLOW_TASKS_INLINE = False
    broker = app.conf.broker_url
    app.conf.broker_url = f"{server}/12"
    yield queue
    app.conf.broker_url = broker
    queue.flushdb()


@pytest.mark.redis
def test_the_sweep_hands_out_lost_work_once_per_delay_not_every_tick(
    write_config, pushed, clock, settings, redis_broker
):
    """With a broker, handed-out work waits in Redis; the sweep must not queue it again and
    again while it waits (a backlog would snowball)."""
    from segflow.models import User
    from segflow.pipeline import sweep

    pushed(write_config(CONFIG.format(subject="Receipt")))
    User.objects.create(id="lost", attributes={}, evaluation_pending=True)
    Event.objects.create(user_id="lost", name="click", attributes={})
    settings.SEGFLOW_SWEEP_AFTER_SECONDS = 30
    redis_broker.flushdb()  # the push's own kick of the schedule
    clock.advance(seconds=31)
    assert sweep(clock.now) == 2
    for _ in range(10):
        clock.advance(seconds=1)
        assert sweep(clock.now) == 0
    assert redis_broker.llen("celery") == 2
    clock.advance(seconds=30)
    assert sweep(clock.now) == 2  # still not done: once more, a delay later
    assert redis_broker.llen("celery") == 4


@pytest.mark.redis
def test_a_cursor_started_by_a_write_is_not_handed_out_again_by_the_next_tick(
    write_config, pushed, clock, redis_broker
):
    """With a broker: the write's own task starts the new cursor; the tick must not queue it too."""
    import json

    from segflow import users as user_service
    from segflow.pipeline import evaluate_user, tick

    pushed(write_config(CAMPAIGN_CONFIG))
    user_service.put_user("dana", {"email": "dana@example.com"})
    evaluate_user("dana")  # what the queued task does on a worker
    tick()
    queued = [json.loads(m)["headers"]["task"] for m in redis_broker.lrange("celery", 0, -1)]
    assert queued.count("segflow.advance_cursors") == 1, queued


CAMPAIGN_CONFIG = """
def hello(ctx, rt):
    yield rt.send_email("hello")

config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>hi</p>"}},
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["everyone"], "behavior": "static", "flow": hello}},
}
"""
