#!/usr/bin/env python3
"""Where the time of processing events goes: `drain_events` (and `drain_users`) in one process,
on MariaDB, over the workload of bench/ingest.py, with no Celery and no HTTP in between.

    .venv/bin/python bench/profile_drain.py [--users 2000] [--events 20000] [--segments 3]
    .venv/bin/python bench/profile_drain.py --cprofile     # time per function
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from harness import django_here
from ingest import config as workload_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="segflow-drain-")
    path = os.path.join(folder, "segflow_config.py")
    with open(path, "w") as file:
        file.write(workload_config(args.segments))
    env = dict(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND="1",
        SEGFLOW_CONFIG=path,
    )
    try:
        with django_here("drain", **env):
            drain(args)
    finally:
        shutil.rmtree(folder)


def drain(args: argparse.Namespace) -> None:
    from django.core.management import call_command
    from django.db import connection

    from segflow import pipeline

    call_command("segflow_push", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (id, attributes, created_at, updated_at, version, "
            "evaluation_pending) SELECT CONCAT('user-', seq - 1), JSON_OBJECT('email', "
            "CONCAT('user-', seq - 1, '@example.com'), 'score', seq MOD 50, 'plan', "
            "IF(seq MOD 4 = 0, 'pro', 'free')), NOW(6), NOW(6), 1, 1 "
            f"FROM seq_1_to_{args.users}"
        )
    import cProfile
    import pstats

    profiler = cProfile.Profile() if args.cprofile else None
    started = time.monotonic()
    if profiler:
        profiler.enable()
    while pipeline.drain_users():
        pass
    if profiler:
        profiler.disable()
    users_took = time.monotonic() - started
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (user_id, name, attributes, context, timestamp, created_at) "
            f"SELECT CONCAT('user-', (seq * 7919) MOD {args.users}), "
            "IF(seq MOD 10 = 0, 'purchase', 'login'), '{}', '{}', NOW(6), NOW(6) "
            f"FROM seq_1_to_{args.events}"
        )
    started = time.monotonic()
    if profiler:
        profiler.enable()
    while pipeline.drain_events():
        pass
    if profiler:
        profiler.disable()
    took = time.monotonic() - started
    print(
        f"{args.segments} segments: {args.users} new users evaluated in {users_took:.1f} s "
        f"({args.users / users_took:.0f}/s); {args.events} events processed in {took:.1f} s "
        f"({args.events / took:.0f} events/s) in one process",
        flush=True,
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(
            r"segflow|campaigns|segments|templates|delivery|transactions", 45
        )


if __name__ == "__main__":
    main()
