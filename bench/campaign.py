#!/usr/bin/env python3
"""Campaign throughput: seconds from 10,000 users entering a one-email campaign until all 10,000
emails are accepted by the provider, with one and with two Celery workers, on MariaDB.

    .venv/bin/python bench/campaign.py [--users 10000] [--workers 1 2] [--runs 1] [--env N=V]

The provider is Postmark as production talks to it, anymail's Postmark backend over HTTP,
pointed at a local stand-in of its API (bench/postmark_standin.py) with POSTMARK_API_URL. The
users are loaded first; then a push adds the segment and the campaign, which enters them all at
once (set-based statements) and leaves their first step due; beat's tick claims due cursors in
batches and the workers run them. The clock runs from the push to the stand-in's accepting the
last email.
"""

from __future__ import annotations

import argparse
import time

from harness import Deployment, scratch_dir
from postmark_standin import PostmarkStandIn

WITHOUT_CAMPAIGN = """
config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>Hello</p>"}},
}
"""
WITH_CAMPAIGN = """
def flow(ctx, rt):
    yield rt.send_email("hello")

config = {
    "email_provider": {"config": {"name": "postmark", "broadcast_message_stream": "broadcast"},
                       "from_address": "hello@example.com"},
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>Hello</p>"}},
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["everyone"], "behavior": "static", "flow": flow}},
}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=1, help="runs of each worker count")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the production processes (SEGFLOW_BATCH_SIZE=100, ...)",
    )
    args = parser.parse_args()
    settings = dict(pair.split("=", 1) for pair in args.env)
    for workers in args.workers:
        for _ in range(args.runs):
            run(args.users, workers, settings)


def run(users: int, workers: int, settings: dict[str, str]) -> None:
    with PostmarkStandIn() as standin:
        env = {
            "SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND": "0",
            "POSTMARK_API_URL": standin.url,
            "POSTMARK_SERVER_TOKEN": "bench-token",
            **settings,
        }
        deployment = Deployment(scratch_dir(), WITHOUT_CAMPAIGN, concurrency=4, env=env)
        try:
            deployment.up(workers=workers)
            deployment.query(
                "INSERT INTO users (id, attributes, created_at, updated_at, version, "
                "evaluation_pending) SELECT CONCAT('u', seq), JSON_OBJECT('email', "
                "CONCAT('u', seq, '@example.com')), NOW(6), NOW(6), 1, 0 "
                f"FROM seq_1_to_{users}"
            )
            (deployment.tmp / "segflow_config.py").write_text(WITH_CAMPAIGN)
            started = time.monotonic()
            plan = deployment.manage("segflow_push")
            pushed = time.monotonic() - started
            deadline = time.monotonic() + 1800
            while standin.count < users:
                assert time.monotonic() < deadline, f"only {standin.count} in 30 minutes:\n{plan}"
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            assert f"{users} user(s) enter" in plan, plan
            time.sleep(1)  # the last outcomes are recorded after the provider's answer
            statuses = dict(deployment.query("SELECT status, COUNT(*) FROM outbox GROUP BY 1"))
            twice = sum(1 for n in standin.received.values() if n > 1)
            (spans,) = deployment.query(
                "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(created_at), MAX(created_at)) / 1e6, "
                "TIMESTAMPDIFF(MICROSECOND, MIN(created_at), MAX(sent_at)) / 1e6 FROM outbox"
            )
            print(
                f"{workers} worker(s) x 4 processes: {users} emails in {elapsed:.1f} s "
                f"({users / elapsed:.0f} emails/s; the push itself took {pushed:.1f} s); "
                f"{standin.requests} requests to the provider, {twice} recipient(s) got one "
                f"twice; outbox {statuses}; rows stored over {spans[0]:.1f} s, the last sent "
                f"{spans[1]:.1f} s after the first was stored",
                flush=True,
            )
        finally:
            deployment.down()


if __name__ == "__main__":
    main()
