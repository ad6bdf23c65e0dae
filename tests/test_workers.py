"""Production mode for real: granian, two Celery workers and one beat over Redis, on MariaDB.

2,000 users enter a two-email campaign and each makes a purchase; every user must get exactly one
email per step and per event. Then again, with a worker killed by SIGKILL halfway through, sending
through anymail's Postmark backend to a local stand-in of Postmark's API that counts what it
accepted: "sent twice" is checked where it would matter, at the provider.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.postmark_standin import PostmarkStandIn
from segflow.client import Client

from .deployment import Deployment

pytestmark = [pytest.mark.mysql_only, pytest.mark.redis]

USERS = 2000

CONFIG = """
from segflow.config import SegflowConfig

def two_emails(ctx, rt):
    yield rt.send_email("first")
    yield rt.wait(seconds=3)
    yield rt.send_email("second")

html = lambda user: "<p>hello</p>"
config: SegflowConfig = {
    "templates": {"first": {"subject": "First", "html": html},
                  "second": {"subject": "Second", "html": html}},
    "segments": {
        "batch": {"sql": "SELECT u.id FROM users u "
                         "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.batch')) IS NOT NULL"},
    },
    "campaigns": {"drip": {"segments": ["batch"], "behavior": "static", "flow": two_emails}},
    "transactions": {"receipt": {"event": "purchase", "subject": "Receipt", "html": html}},
}
"""


POSTMARK_CONFIG = CONFIG.replace(
    "config: SegflowConfig = {",
    'config: SegflowConfig = {\n    "email_provider": {"config": {"name": "postmark"}, '
    '"from_address": "hello@example.com"},',
)
# Emails a sending process claims, sends and records together (SEGFLOW_EMAIL_SEND_BATCH).
SEND_BATCH = 10


@pytest.fixture
def deployment(tmp_path):
    deployment = Deployment(tmp_path, CONFIG)
    try:
        yield deployment
    finally:
        deployment.down()


@pytest.fixture
def postmark_deployment(tmp_path):
    with PostmarkStandIn() as standin:
        env = {
            "SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND": "0",
            "POSTMARK_API_URL": standin.url,
            "POSTMARK_SERVER_TOKEN": "workers-test-token",
            "SEGFLOW_EMAIL_SEND_BATCH": str(SEND_BATCH),
        }
        deployment = Deployment(tmp_path, POSTMARK_CONFIG, env=env)
        deployment.standin = standin
        try:
            yield deployment
        finally:
            deployment.down()


def drive(client: Client, prefix: str, on_halfway=None) -> list[str]:
    ids = [f"{prefix}-{n}" for n in range(USERS)]

    def one(user_id: str) -> None:
        client.create_user(user_id, {"email": f"{user_id}@example.com", "batch": prefix})
        client.emit(user_id, "purchase", {"amount": 10})

    with ThreadPoolExecutor(max_workers=16) as pool:
        for n, _ in enumerate(pool.map(one, ids)):
            if n == USERS // 2 and on_halfway:
                on_halfway()
    return ids


SUBJECTS = {"first": "First", "second": "Second", "receipt": "Receipt"}


def wait_for_all(
    deployment: Deployment, ids: list[str], settled=("sent",), timeout: float = 240
) -> None:
    prefix = ids[0].rsplit("-", 1)[0]
    marks = ", ".join(["%s"] * len(settled))
    deadline = time.monotonic() + timeout
    while True:
        done = deployment.query(
            f"SELECT COUNT(*) FROM outbox WHERE status IN ({marks}) AND user_id LIKE %s",
            (*settled, prefix + "-%"),
        )[0][0]
        if done >= 3 * len(ids):
            return
        assert time.monotonic() < deadline, (
            f"only {done} of {3 * len(ids)} emails settled in time\n{deployment.report(prefix)}"
        )
        time.sleep(1)


def assert_once_at_most(
    deployment: Deployment, ids: list[str], unknown_allowed: int = 0, delivered: Counter = None
) -> None:
    """One outbox row per user and step or event; each row sent exactly once, except rows a
    killed sender left mid-send: those are `unknown`, at most `unknown_allowed` of them, and were
    received at most once (segflow never sends them again by itself: docs/email.md).
    `delivered` counts (recipient, subject) as the provider got them (else the mail folder)."""
    prefix = ids[0].rsplit("-", 1)[0]
    rows = deployment.query(
        "SELECT user_id, template_name, status FROM outbox WHERE user_id LIKE %s", (prefix + "-%",)
    )
    per_user = Counter((user, template) for user, template, _ in rows)
    assert set(per_user.values()) == {1}
    assert {template for _, template in per_user} == set(SUBJECTS)
    assert len(per_user) == 3 * len(ids)
    statuses = Counter(status for _, _, status in rows)
    assert set(statuses) <= {"sent", "unknown"}
    assert statuses["unknown"] <= unknown_allowed, statuses
    delivered = deployment.delivered() if delivered is None else delivered
    for user, template, status in rows:
        received = delivered[(f"{user}@example.com", SUBJECTS[template])]
        assert received == 1 if status == "sent" else received <= 1, (user, template, status)


def test_every_user_gets_each_email_exactly_once_with_two_workers_and_beat(deployment):
    client = deployment.up()
    ids = drive(client, "calm")
    wait_for_all(deployment, ids)
    assert_once_at_most(deployment, ids)


def test_a_worker_killed_mid_run_loses_nothing_and_sends_nothing_twice(postmark_deployment):
    deployment = postmark_deployment
    client = deployment.up()

    def kill_and_replace() -> None:
        deployment.kill("w1")
        deployment.start_worker("w3")

    ids = drive(client, "crash", on_halfway=kill_and_replace)
    wait_for_all(deployment, ids, settled=("sent", "unknown"))
    # Only the sets of emails the killed worker's 3 processes were sending at that very moment
    # may be left unknown; everything else was picked up again and sent once.
    assert_once_at_most(
        deployment,
        ids,
        unknown_allowed=3 * SEND_BATCH,
        delivered=deployment.standin.received,
    )
    assert deployment.standin.count == sum(deployment.standin.received.values())
