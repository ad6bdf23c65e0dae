#!/usr/bin/env python3
"""Transactional latency: from the API call until the email backend has accepted the email,
p50 and p99, with gunicorn, two Celery workers and beat over Redis, on MariaDB.

    .venv/bin/python bench/transactional.py [--events 500]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from harness import Deployment, scratch_dir, summary

CONFIG = """
config = {
    "segments": {"buyers": {"sql": "SELECT DISTINCT e.user_id AS id FROM events e "
                                   "WHERE e.name = 'purchase'"}},
    "transactions": {"receipt": {"event": "purchase", "subject": "Thanks",
                                 "html": lambda user, event: "<p>Thanks</p>"}},
}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    deployment = Deployment(scratch_dir(), CONFIG)
    try:
        client = deployment.up(workers=2)
        for n in range(50):
            client.create_user(f"u{n}", {"email": f"u{n}@example.com"})
        time.sleep(2)
        calls: dict[int, float] = {}
        for n in range(args.events):
            started = datetime.now(UTC)
            event = client.emit(f"u{n % 50}", "purchase", {"n": n})
            calls[event["id"]] = started.timestamp()
            time.sleep(0.02)  # one at a time, as requests arrive, not a burst
        while deployment.query("SELECT COUNT(*) FROM outbox WHERE status = 'sent'")[0][0] < len(
            calls
        ):
            time.sleep(0.2)
        rows = deployment.query("SELECT event_id, sent_at FROM outbox WHERE status = 'sent'")
        latencies = [
            sent_at.replace(tzinfo=UTC).timestamp() - calls[event_id] for event_id, sent_at in rows
        ]
        print(f"{len(latencies)} purchases, API call to email accepted: {summary(latencies)}")
    finally:
        deployment.down()


if __name__ == "__main__":
    main()
