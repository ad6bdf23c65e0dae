"""A wait for an event with real processes: granian, two Celery workers and beat, on MariaDB.

Users wait for a purchase; each purchase is processed by whichever worker takes its task, and
the woken cursor is claimed by beat's tick and run by whichever worker takes that task. Every user
must be resumed exactly once, with their first purchase: one email each, never the reminder.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .deployment import Deployment

pytestmark = [pytest.mark.mysql_only, pytest.mark.redis]

USERS = 60

CONFIG = """
from datetime import timedelta

from segflow.config import SegflowConfig

def cart(ctx, rt):
    purchase = yield rt.wait_for_event("purchase", timeout=timedelta(minutes=10))
    yield rt.send_email("thanks" if purchase else "reminder")

html = lambda user: "<p>hello</p>"
config: SegflowConfig = {
    "templates": {"thanks": {"subject": "Thanks", "html": html},
                  "reminder": {"subject": "Reminder", "html": html}},
    "segments": {
        "carts": {"sql": "SELECT u.id FROM users u "
                         "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.cart')) IS NOT NULL"},
    },
    "campaigns": {"cart": {"segments": ["carts"], "behavior": "static", "flow": cart}},
}
"""


@pytest.fixture
def deployment(tmp_path):
    deployment = Deployment(tmp_path, CONFIG)
    try:
        yield deployment
    finally:
        deployment.down()


def wait_until(deployment: Deployment, sql: str, expected: int, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        found = deployment.query(sql)[0][0]
        if found >= expected:
            return
        assert time.monotonic() < deadline, (
            f"only {found} of {expected} {what}\n{deployment.report('w')}"
        )
        time.sleep(0.5)


def test_an_event_processed_by_one_worker_resumes_the_wait_once(deployment):
    client = deployment.up()
    ids = [f"w-{n}" for n in range(USERS)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(lambda u: client.create_user(u, {"email": f"{u}@example.com", "cart": 1}), ids)
        )
    wait_until(
        deployment,
        "SELECT COUNT(*) FROM campaign_cursor_steps WHERE kind = 'wait_for_event'",
        USERS,
        "users waiting",
    )

    def buy(user_id: str) -> None:
        # Two purchases and a page view: three wakes for one resumption.
        client.emit(user_id, "purchase", {"order": 1})
        client.emit(user_id, "page_view")
        client.emit(user_id, "purchase", {"order": 2})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(buy, ids))
    wait_until(
        deployment,
        "SELECT COUNT(*) FROM outbox WHERE status = 'sent'",
        USERS,
        "emails sent",
    )
    time.sleep(3)  # a few more ticks: nothing more may come of the later wakes

    rows = deployment.query("SELECT user_id, template_name, status FROM outbox")
    assert sorted(rows) == sorted((u, "thanks", "sent") for u in ids)
    delivered = deployment.delivered()
    assert all(delivered[(f"{u}@example.com", "Thanks")] == 1 for u in ids), delivered
    records = deployment.query(
        "SELECT c.user_id, s.result FROM campaign_cursor_steps s "
        "JOIN campaign_cursors c ON c.id = s.cursor_id WHERE s.kind = 'wait_for_event'"
    )
    assert len(records) == USERS
    for user_id, result in records:
        event = json.loads(result)["event"]
        assert event["name"] == "purchase" and event["attributes"] == {"order": 1}, user_id
    statuses = deployment.query(
        "SELECT status, step_count, COUNT(*) FROM campaign_cursors GROUP BY 1, 2"
    )
    assert statuses == [("completed", 2, USERS)]
