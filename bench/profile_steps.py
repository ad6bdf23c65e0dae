#!/usr/bin/env python3
"""Where the time of one campaign email goes: a profile of advancing cursors and delivering
their emails in one process, on MariaDB, without Celery in between.

    .venv/bin/pip install pyinstrument && .venv/bin/python bench/profile_steps.py [--users 1000]
    .venv/bin/python bench/profile_steps.py --cprofile   # the standard library's profiler
    .venv/bin/python bench/profile_steps.py --postmark   # through anymail to a local Postmark
    .venv/bin/python bench/profile_steps.py --plain      # no profiler: time and CPU per email
"""

from __future__ import annotations

import argparse
import time

from harness import django_here


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--cprofile", action="store_true", help="time per function, not a tree")
    parser.add_argument("--plain", action="store_true", help="no profiler: the time and CPU alone")
    parser.add_argument(
        "--postmark",
        action="store_true",
        help="send through anymail's Postmark backend to bench/postmark_standin.py, not locmem",
    )
    args = parser.parse_args()
    provider = {}
    if args.postmark:
        from postmark_standin import PostmarkStandIn

        standin = PostmarkStandIn().start()
        provider = {"email_provider": {"config": {"name": "postmark"}, "from_address": "a@b.co"}}
    env = dict(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND="1",
    )
    if args.postmark:
        env.update(
            SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND="0",
            POSTMARK_API_URL=standin.url,
            POSTMARK_SERVER_TOKEN="profile-token",
        )
    with django_here("profile", **env):
        from delivery.models import OutboxEmail
        from segflow import pipeline
        from segflow.config import validate_config
        from segflow.live_config import live_config
        from segflow.models import User
        from segflow.push import push

        User.objects.bulk_create(
            [
                User(
                    id=f"u{n}", attributes={"email": f"u{n}@example.com"}, evaluation_pending=False
                )
                for n in range(args.users)
            ]
        )

        def flow(ctx, rt):
            yield rt.send_email("hello")

        config = validate_config(
            {
                **provider,
                "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>Hello</p>"}},
                "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
                "campaigns": {
                    "hello": {"segments": ["everyone"], "behavior": "static", "flow": flow}
                },
            }
        )
        live_config.set(config)
        push(config)
        started, cpu = time.monotonic(), time.process_time()
        if args.plain:
            pipeline.run_due_cursors()
        elif args.cprofile:
            import cProfile
            import pstats

            # CPU time of this process: on a shared, loaded machine the wall clock says more
            # about the neighbours (the database's time is left out).
            with cProfile.Profile(time.process_time) as profiler:
                pipeline.run_due_cursors()  # inline: advance, then deliver, for every cursor
        else:
            from pyinstrument import Profiler

            profiler = Profiler()
            with profiler:
                pipeline.run_due_cursors()
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
        sent = OutboxEmail.objects.filter(status="sent").count()
        print(
            f"{sent} emails in {elapsed:.1f} s in one process: {sent / elapsed:.0f} emails/s; "
            f"{cpu / sent * 1000:.2f} ms of this process's CPU per email"
        )
        if args.plain:
            pass
        elif args.cprofile:
            ours = r"segflow|campaigns|segments|templates|delivery|transactions|anymail|requests"
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(ours, 40)
        else:
            print(profiler.output_text(unicode=False, color=False))


if __name__ == "__main__":
    main()
