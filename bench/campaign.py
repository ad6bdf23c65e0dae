#!/usr/bin/env python3
"""Campaign throughput: seconds from 10,000 users entering a one-email campaign until all 10,000
emails are accepted by the email backend, with one and with two Celery workers, on MariaDB.

    .venv/bin/python bench/campaign.py [--users 10000]

The users are loaded first; then a push adds the segment and the campaign, which enters them
all at once (set-based statements) and leaves their first step due; beat's tick claims due
cursors in batches and the workers run them.
"""

from __future__ import annotations

import argparse
import time

from harness import Deployment, scratch_dir

WITHOUT_CAMPAIGN = """
config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>Hello</p>"}},
}
"""
WITH_CAMPAIGN = """
def flow(ctx, rt):
    yield rt.send_email("hello")

config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>Hello</p>"}},
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["everyone"], "behavior": "static", "flow": flow}},
}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    for workers in (1, 2):
        deployment = Deployment(scratch_dir(), WITHOUT_CAMPAIGN, concurrency=4)
        try:
            deployment.up(workers=workers)
            deployment.query(
                "INSERT INTO users (id, attributes, created_at, updated_at, version, "
                "evaluation_pending) SELECT CONCAT('u', seq), JSON_OBJECT('email', "
                "CONCAT('u', seq, '@example.com')), NOW(6), NOW(6), 1, 0 "
                f"FROM seq_1_to_{args.users}"
            )
            (deployment.tmp / "segflow_config.py").write_text(WITH_CAMPAIGN)
            started = time.monotonic()
            plan = deployment.manage("segflow_push")
            pushed = time.monotonic() - started
            deadline = time.monotonic() + 1800
            while True:
                sent = deployment.query("SELECT COUNT(*) FROM outbox WHERE status = 'sent'")[0][0]
                if sent >= args.users:
                    break
                assert time.monotonic() < deadline, f"only {sent} sent in 30 minutes:\n{plan}"
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            assert f"{args.users} user(s) enter" in plan, plan
            print(
                f"{workers} worker(s) x 4 processes: {args.users} emails in {elapsed:.1f} s "
                f"({args.users / elapsed:.0f} emails/s; the push itself took {pushed:.1f} s)",
                flush=True,
            )
        finally:
            deployment.down()


if __name__ == "__main__":
    main()
