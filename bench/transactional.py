#!/usr/bin/env python3
"""Transactional latency: from the API call until the provider has accepted the email (anymail's
Postmark backend, to the local stand-in of bench/postmark_standin.py), p50 and p99, with the
production processes of bench/ingest.py (granian, a Celery worker, beat) over Redis, on MariaDB.

    .venv/bin/python bench/transactional.py [--events 500]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from harness import Deployment, scratch_dir, summary
from postmark_standin import PostmarkStandIn

CONFIG = """
config = {
    "email_provider": {"config": {"name": "postmark"}, "from_address": "shop@example.com"},
    "segments": {"buyers": {"sql": "SELECT DISTINCT e.user_id AS id FROM events e "
                                   "WHERE e.name = 'purchase'"}},
    "transactions": {"receipt": {"event": "purchase", "subject": "Thanks",
                                 "html": lambda user, event: "<p>Thanks</p>"}},
}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the production processes (SEGFLOW_DOORBELL_PAUSE_SECONDS=0.05, ...)",
    )
    args = parser.parse_args()
    standin = PostmarkStandIn().start()
    env = {
        "SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND": "0",
        "POSTMARK_API_URL": standin.url,
        "POSTMARK_SERVER_TOKEN": "bench-token",
        **dict(pair.split("=", 1) for pair in args.env),
    }
    deployment = Deployment(
        scratch_dir(),
        CONFIG,
        concurrency=args.concurrency,
        pool=args.pool,
        embedded_beat="thread",
        env=env,
    )
    try:
        client = deployment.up(workers=1, web_workers=2, web_threads=8)
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
        standin.stop()


if __name__ == "__main__":
    main()
