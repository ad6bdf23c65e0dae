#!/usr/bin/env python3
"""Full evaluation of a segment at scale, on MariaDB/MySQL: seconds and peak memory.

    .venv/bin/python bench/segment_eval.py --users 100000
    .venv/bin/python bench/segment_eval.py --users 1000000

Seeds USERS users (one in ten on plan "pro") and 2 x USERS purchase events in bulk, in a database
of its own (dropped afterwards), then evaluates, each in a fresh process so its peak memory is
its own: an attribute segment (plan = 'pro') and an event-aggregate segment (the seed's
big-spenders), first from empty (everyone enters) and again (nobody changes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("SEGFLOW_BENCH_MYSQL", "mysql://root@127.0.0.1:3306")

SEGMENTS = {
    "attribute": "SELECT u.id FROM users u "
    "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'",
    "event-aggregate": "SELECT u.id FROM users u JOIN events e ON e.user_id = u.id "
    "WHERE e.name = 'purchase' GROUP BY u.id "
    "HAVING SUM(JSON_EXTRACT(e.attributes, '$.amount')) > 1000",
}


def environment(database: str) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": f"{SERVER}/{database}",
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SETTINGS_MODULE": "segflow_project.settings",
        "LOG_LEVEL": "WARNING",
    }


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def seed(users: int) -> None:
    """In the child: bulk-load users and events with MariaDB's sequence tables."""
    django_setup()
    from django.db import connection

    with connection.cursor() as cursor:
        started = time.monotonic()
        cursor.execute(
            "INSERT INTO users (id, attributes, created_at, updated_at, version, "
            "evaluation_pending) SELECT CONCAT('u', seq), JSON_OBJECT('plan', "
            "IF(seq % 10 = 0, 'pro', 'free'), 'email', CONCAT('u', seq, '@example.com')), "
            f"NOW(6), NOW(6), 1, 0 FROM seq_1_to_{users}"
        )
        cursor.execute(
            "INSERT INTO events (user_id, name, attributes, context, timestamp, created_at, "
            "processed_at) SELECT CONCAT('u', 1 + seq %% %s), 'purchase', "
            "JSON_OBJECT('amount', seq %% 997), '{}', NOW(6), NOW(6), NOW(6) "
            f"FROM seq_1_to_{2 * users}",
            [users],
        )
        print(
            f"seeded {users} users and {2 * users} events in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )


def evaluate(name: str) -> None:
    """In the child: evaluate one segment, twice, and report seconds and peak memory."""
    django_setup()
    import resource

    from django.utils import timezone

    from segflow.config import validate_config
    from segments.models import Segment, SegmentMembership
    from segments.services import refresh_segment

    config = validate_config({"segments": {name: {"sql": SEGMENTS[name]}}})
    definition = config.segments[name]
    row = Segment.objects.create(
        name=name, kind="sql", source=definition.source, fingerprint=definition.fingerprint
    )
    timings = []
    for _ in range(2):
        started = time.monotonic()
        count = refresh_segment(row, definition, timezone.now())
        timings.append((time.monotonic() - started, count.entered, count.left))
    members = SegmentMembership.objects.filter(segment=row).count()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"segment": name, "members": members, "runs": timings, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        {"seed": lambda: seed(args.users), "evaluate": lambda: evaluate(args.child[1])}[
            args.child[0]
        ]()
        return

    import MySQLdb

    database = f"segflow_bench_{os.getpid()}"
    server = MySQLdb.connect(host="127.0.0.1", user="root", autocommit=True)
    server.cursor().execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    env = environment(database)
    try:

        def run(*command: str) -> subprocess.CompletedProcess:
            done = subprocess.run(
                [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True
            )
            if done.returncode:
                sys.exit(done.stdout + done.stderr)
            return done

        run("manage.py", "migrate", "--noinput")
        print(f"Seeding {args.users:,} users ...", file=sys.stderr, flush=True)
        run(__file__, "--users", str(args.users), "--child", "seed")
        print(
            f"{'segment':<16} {'members':>9} {'first (all enter)':>18} {'again (no change)':>18}"
            f" {'peak RSS':>9}"
        )
        for name in SEGMENTS:
            out = run(__file__, "--users", str(args.users), "--child", "evaluate", name).stdout
            result = json.loads(out.strip().splitlines()[-1])
            (first, entered, _), (again, _, _) = result["runs"]
            print(
                f"{name:<16} {result['members']:>9,} {first:>16.1f} s {again:>16.1f} s"
                f" {result['peak_mb']:>6.0f} MB",
                flush=True,
            )
    finally:
        server.cursor().execute(f"DROP DATABASE IF EXISTS {database}")


if __name__ == "__main__":
    main()
