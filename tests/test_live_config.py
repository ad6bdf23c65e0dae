"""Every process runs the config version last pushed, loaded from the database: a worker needs no
copy of the team's files, picks up a push without a restart, and a version it cannot load leaves
the work that needs it pending (nothing is lost)."""

import logging
import os
import shutil
import textwrap
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from segflow import users as user_service
from segflow.config.bundle import cache_root
from segflow.live_config import live_config
from segflow.models import ConfigVersion, Event, Push
from segflow.pipeline import tick

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from helpers import receipt_subject

config = {{
    "segments": {{"everyone": {{"sql": "SELECT u.id FROM users u"}}}},
    "transactions": {{
        "receipt": {{"event": "paid", "subject": receipt_subject("{subject}"),
                     "html": "emails/receipt.html"}},
    }},
}}
"""
HELPERS = "def receipt_subject(text):\n    return text + '!'\n"
BASE = "<html><body>{% block content %}{% endblock %}<p>{{ footer }}</p></body></html>"
RECEIPT = '{% extends "emails/base.html" %}{% block content %}<p>{{ line }}</p>{% endblock %}'


def write_folder(folder: Path, subject="Receipt", line="Thanks", footer="Acme") -> str:
    """A team's config folder: the config, a helper module it imports, templates that extend."""
    (folder / "emails").mkdir(parents=True, exist_ok=True)
    (folder / "segflow_config.py").write_text(textwrap.dedent(CONFIG.format(subject=subject)))
    (folder / "helpers.py").write_text(HELPERS)
    (folder / "emails" / "base.html").write_text(BASE.replace("{{ footer }}", footer))
    (folder / "emails" / "receipt.html").write_text(RECEIPT.replace("{{ line }}", line))
    return str(folder / "segflow_config.py")


def push_from(location: str, **kwargs) -> str:
    from io import StringIO

    out = StringIO()
    call_command("segflow_push", "--config", location, stdout=out, **kwargs)
    return out.getvalue()


def as_a_new_worker(settings, tmp_path) -> None:
    """This process becomes a worker started elsewhere: no config file, nothing loaded yet."""
    settings.SEGFLOW_CONFIG = str(tmp_path / "nowhere" / "segflow_config.py")
    live_config.reset()


def pay(user_id: str) -> None:
    user_service.put_user(user_id, {"email": f"{user_id}@example.com"})
    user_service.record_event(user_id, "paid", {})


def test_a_worker_with_no_config_file_runs_the_version_pushed_from_elsewhere(settings, tmp_path):
    team = tmp_path / "team"
    push_from(write_folder(team))
    shutil.rmtree(team)  # the files were on the CI runner only
    as_a_new_worker(settings, tmp_path)

    pay("ann")

    assert [m.subject for m in mail.outbox] == ["Receipt!"]
    assert "<p>Thanks</p>" in mail.outbox[0].alternatives[0][0]
    assert "Acme" in mail.outbox[0].alternatives[0][0]  # the template it extends came along
    running = live_config.current()
    assert running.base_dir.parent == cache_root()
    assert running.base_dir.name == ConfigVersion.objects.get().fingerprint


def test_a_running_worker_picks_up_the_next_push_without_a_restart(settings, tmp_path):
    team = tmp_path / "team"
    push_from(write_folder(team))
    first = live_config.current()
    # Another machine pushes a changed template (the helper module and base template unchanged).
    output = push_from(write_folder(team, line="Thank you"))
    assert "Files\n  ~ emails/receipt.html" in output
    live_config.set(first, version=ConfigVersion.objects.get(number=1).fingerprint)

    pay("bob")

    assert "<p>Thank you</p>" in mail.outbox[0].alternatives[0][0]
    assert live_config.current() is not first


def test_a_change_to_a_file_the_definitions_do_not_show_is_a_new_version(settings, tmp_path):
    """The base template is in no fingerprint of a template: the files are, so the workers get
    it all the same."""
    team = tmp_path / "team"
    push_from(write_folder(team))
    output = push_from(write_folder(team, footer="Acme Corp"))
    assert "Plan for" in output and "Files\n  ~ emails/base.html" in output
    assert "Pushed. Version 2 is live" in output
    as_a_new_worker(settings, tmp_path)
    pay("cy")
    assert "Acme Corp" in mail.outbox[0].alternatives[0][0]


def test_a_version_this_worker_cannot_load_leaves_the_work_waiting(settings, tmp_path, caplog):
    team = tmp_path / "team"
    push_from(write_folder(team))
    as_a_new_worker(settings, tmp_path)
    pay("dee")
    assert len(mail.outbox) == 1
    first, first_version = live_config.current(), live_config.version
    # A push whose config imports a package this worker does not have.
    (team / "segflow_config.py").write_text(
        "import os\n"
        "if os.environ.get('SEGFLOW_TEST_WORKER'):\n"
        "    import package_only_on_the_ci_runner  # noqa\n"
        + textwrap.dedent(CONFIG.format(subject="New receipt"))
    )
    push_from(str(team / "segflow_config.py"))
    live_config.set(first, version=first_version)  # this worker still runs version 1
    os.environ["SEGFLOW_TEST_WORKER"] = "1"
    try:
        with caplog.at_level(logging.ERROR, logger="segflow.live_config"):
            user_service.record_event("dee", "paid", {})
            user_service.record_event("dee", "paid", {})
            with pytest.raises(CommandError, match="could not load the config last pushed"):
                call_command("segflow_tick")
        assert Event.objects.filter(processed_at__isnull=True).count() == 2  # left for the sweep
        assert len(mail.outbox) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors  # once, not for every unit of work
        assert "cannot load the pushed config (version 2)" in errors[0]
        assert "package_only_on_the_ci_runner" in errors[0]
    finally:
        del os.environ["SEGFLOW_TEST_WORKER"]

    # Rolling back makes the version it had live again: the waiting work goes out.
    call_command("segflow_push", "--rollback", stdout=open(os.devnull, "w"))
    settings.SEGFLOW_SWEEP_AFTER_SECONDS = 0
    tick()
    assert Event.objects.filter(processed_at__isnull=True).count() == 0
    assert [m.subject for m in mail.outbox] == ["Receipt!"] * 3


def test_a_worker_with_another_refresh_interval_still_runs_the_pushed_version(settings, tmp_path):
    """The interval is part of a time-based segment's fingerprint: such a worker leaves that
    segment alone, and runs everything else of the version."""
    team = tmp_path / "team"
    write_folder(team)
    source = (team / "segflow_config.py").read_text()
    (team / "segflow_config.py").write_text(
        source.replace(
            '"everyone": {"sql": "SELECT u.id FROM users u"}',
            '"everyone": {"sql": "SELECT u.id FROM users u"}, '
            '"recent": {"sql": "SELECT u.id FROM users u WHERE u.created_at > %(now)s"}',
        )
    )
    push_from(str(team / "segflow_config.py"))
    as_a_new_worker(settings, tmp_path)
    settings.SEGFLOW_TIME_SEGMENT_REFRESH_SECONDS = 999
    pay("fay")
    assert [m.subject for m in mail.outbox] == ["Receipt!"]
    assert not Event.objects.filter(processed_at__isnull=True).exists()
    assert [row.name for row, _ in live_config.segments(live_config.current())] == ["everyone"]


def test_before_any_push_a_process_runs_SEGFLOW_CONFIG_or_waits_for_a_push(settings, tmp_path):
    team = tmp_path / "team"
    settings.SEGFLOW_CONFIG = write_folder(team)
    # The embedded default's first run: nothing pushed yet, the config file is what it runs.
    assert live_config.sync().location == settings.SEGFLOW_CONFIG
    assert live_config.version is None

    as_a_new_worker(settings, tmp_path)
    assert live_config.sync().templates == {}  # nothing to run, nothing stored to act on
    tick()


def test_only_the_versions_kept_stay_stored_and_the_live_one_always(settings, tmp_path):
    settings.SEGFLOW_CONFIG_VERSIONS_KEPT = 2
    team = tmp_path / "team"
    for n in range(4):
        push_from(write_folder(team, line=f"Thanks {n}"))
    assert list(ConfigVersion.objects.values_list("number", flat=True)) == [4, 3]
    call_command("segflow_push", "--rollback", "--to", "3", stdout=open(os.devnull, "w"))
    push_from(write_folder(team, line="Thanks 4"))  # version 5
    assert list(ConfigVersion.objects.values_list("number", flat=True)) == [5, 3]
    settings.SEGFLOW_CONFIG_VERSIONS_KEPT = 1
    call_command("segflow_push", "--rollback", stdout=open(os.devnull, "w"))
    assert list(ConfigVersion.objects.values_list("number", flat=True)) == [3]
    assert Push.objects.first().version.number == 3
    with pytest.raises(CommandError, match=r"there is no version 4 \(kept: 3\)"):
        call_command("segflow_push", "--rollback", "--to", "4")
    push_from(write_folder(team, line="Thanks 6"))
    assert list(ConfigVersion.objects.values_list("number", flat=True)) == [6]  # never reused


@pytest.fixture
def redis_broker(settings):
    """Tasks go to a real Redis (a database of its own) instead of running in this process."""
    import redis

    from segflow_project.celery import app

    # The database after the tests' own (dev.py runs its two passes at once, two databases each).
    from .deployment import REDIS_URL

    tests = urlsplit(REDIS_URL)
    broker_url = urlunsplit(tests._replace(path=f"/{int(tests.path.strip('/') or 0) + 1}"))
    queue = redis.Redis.from_url(broker_url)
    queue.flushdb()
    settings.SEGFLOW_TASKS_INLINE = False
    # The app reads Django's settings under their CELERY_ names: `conf.broker_url` is read-only.
    broker = app.conf["CELERY_BROKER_URL"]
    app.conf["CELERY_BROKER_URL"] = broker_url
    _forget_broker_connections(app)
    yield queue
    app.conf["CELERY_BROKER_URL"] = broker
    _forget_broker_connections(app)
    queue.flushdb()


def _forget_broker_connections(app) -> None:
    # Celery keeps the connection and producer pools of the broker it first used; drop them, as
    # Celery itself does in a forked process.
    app._pool = None
    app.amqp._producer_pool = None


SIMPLE = """
config = {
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "transactions": {
        "receipt": {"event": "paid", "subject": "Receipt", "html": lambda u, e: "<p>ok</p>"},
    },
}
"""


@pytest.mark.redis
def test_writes_and_ticks_keep_at_most_one_drain_task_waiting_per_queue(
    write_config, pushed, clock, redis_broker
):
    """With a broker, events and changed users wait in the database; writes and ticks hand out a
    drain task, but never a second while one waits in Redis (a backlog would snowball), and one
    again as soon as a drain has started (what arrives after it looked is not forgotten)."""
    import json

    from segflow.dispatch import drain_started
    from segflow.pipeline import drain_queues

    def waiting() -> list[str]:
        return sorted(
            json.loads(m)["headers"]["task"]
            for queue in ("celery", "segflow.drains")
            for m in redis_broker.lrange(queue, 0, -1)
        )

    pushed(write_config(SIMPLE))
    redis_broker.delete("celery")  # the push's own kick of the schedule
    for n in range(20):
        user_service.put_user(f"u{n}", {})
        user_service.record_event(f"u{n}", "click", {})
    drain_queues()
    assert waiting() == ["segflow.drain_events", "segflow.drain_users"]
    drain_started("events")  # a worker took the drain task
    (taken,) = [m for m in redis_broker.lrange("segflow.drains", 0, -1) if b"drain_events" in m]
    redis_broker.lrem("segflow.drains", 1, taken)
    assert waiting() == ["segflow.drain_users"]
    user_service.record_event("u1", "click", {})
    user_service.record_event("u2", "click", {})
    assert waiting().count("segflow.drain_events") == 1
    assert Event.objects.filter(processed_at__isnull=True).count() == 22


@pytest.mark.redis
def test_a_cursor_started_by_a_write_is_not_handed_out_again_by_the_next_tick(
    write_config, pushed, clock, redis_broker
):
    """With a broker: the write's own task starts the new cursor; the tick must not queue it too."""
    import json

    from segflow.pipeline import evaluate_user

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
