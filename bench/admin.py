#!/usr/bin/env python3
"""The admin's pages at real sizes, on MariaDB: how long each takes to render, warm.

    .venv/bin/python bench/admin.py --scale 0.01     # 10,000 cursors: a quick look
    .venv/bin/python bench/admin.py                  # 1,000,000 cursors, 5,000,000 emails,
                                                     # 10,000,000 events (takes a while)

Pushes a config with three campaigns, then fills a database of its own (dropped afterwards,
unless --keep) in bulk with MariaDB's sequence tables: SCALE x 1,000,000 users, one cursor each
(active at various steps, completed, exited, failed ...) with their step records, 5 emails per
cursor in the outbox (sent, delivered, opened, skipped, failed ...), 10 events per user, two
segments' memberships (everyone, and a fifth of them) and 30 days of hourly snapshots. The
admin's counts are then made from the tables, as `migrate` makes them on an existing database.

Each page is requested twice to warm up, then REPEAT times through Django's test client, signed
in as a superuser; the median and the slowest are printed, with the number of queries and the
slowest query. Target: under 500 ms for the home page, the campaign list, a campaign's page
and a segment's page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("SEGFLOW_BENCH_MYSQL", "mysql://root@127.0.0.1:3306")
CHUNK = 250_000

CONFIG = """
from segflow.config import SegflowConfig

def onboarding(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("tips")
    yield rt.wait(days=3)
    yield rt.send_email("final")

def winback(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("tips")
    yield rt.wait(days=3)
    yield rt.send_email("final")

def reactivation(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("tips")
    yield rt.wait(days=3)
    yield rt.send_email("final")

html = lambda user: "<p>Hello</p>"
config: SegflowConfig = {
    "templates": {name: {"subject": name.title(), "html": html}
                  for name in ("welcome", "tips", "final")},
    "segments": {
        "everyone": {"sql": "SELECT u.id FROM users u WHERE 1 = 0"},
        "buyers": {"sql": "SELECT u.id FROM users u WHERE 1 = 0"},
    },
    "campaigns": {
        "onboarding": {"segments": ["everyone"], "behavior": "static", "flow": onboarding},
        "winback": {"segments": ["buyers"], "behavior": "dynamic", "flow": winback},
        "reactivation": {"segments": ["everyone"], "behavior": "static", "flow": reactivation},
    },
    "transactions": {"receipt": {"event": "purchase", "subject": "Receipt", "html": html}},
}
"""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def setup(database: str) -> None:
    os.environ.update(
        DATABASE_URL=f"{SERVER}/{database}",
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 40,
        ALLOWED_HOSTS="testserver",
        SECURE_SSL_REDIRECT="0",
        DJANGO_SETTINGS_MODULE="segflow_project.settings",
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def create_database(database: str) -> None:
    import MySQLdb

    rest = SERVER.split("://", 1)[1]
    user, _, hostport = rest.rpartition("@")
    host, _, port = hostport.partition(":")
    db = MySQLdb.connect(host=host, user=user or "root", port=int(port or 3306))
    db.cursor().execute(f"DROP DATABASE IF EXISTS {database}")
    db.cursor().execute(
        f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    db.close()


def drop_database() -> None:
    from django.db import connection

    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {name}")


def timed(what: str):
    class Timer:
        def __enter__(self):
            self.started = time.monotonic()

        def __exit__(self, *exc):
            if exc[0] is None:
                say(f"{what}: {time.monotonic() - self.started:.1f} s")

    return Timer()


def in_chunks(cursor, total: int, sql: str) -> None:
    """Run `sql` (with {lo} and {hi}) for 1..total, CHUNK at a time, each its own commit."""
    for lo in range(1, total + 1, CHUNK):
        hi = min(total, lo + CHUNK - 1)
        cursor.execute(sql.format(lo=lo, hi=hi, n=total))


def fill(scale: float) -> dict:
    from django.core.management import call_command
    from django.db import connection

    from campaigns.models import Campaign
    from segflow.config import load_config
    from segflow.live_config import live_config
    from segflow.push import push
    from segments.models import Segment

    users = max(1000, int(1_000_000 * scale))
    cursors = users
    emails = 5 * cursors
    events = 10 * users
    with timed("migrate"):
        call_command("migrate", verbosity=0)
    config_dir = Path(tempfile.mkdtemp(prefix="segflow-bench-admin-"))
    (config_dir / "segflow_config.py").write_text(textwrap.dedent(CONFIG))
    config = load_config(str(config_dir / "segflow_config.py"))
    live_config.set(config)
    push(config)
    campaign_ids = dict(Campaign.objects.values_list("name", "pk"))
    segment_ids = dict(Segment.objects.values_list("name", "pk"))
    onboarding, winback, reactivation = (
        campaign_ids[n] for n in ("onboarding", "winback", "reactivation")
    )
    everyone, buyers = segment_ids["everyone"], segment_ids["buyers"]

    with connection.cursor() as c:
        c.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
        with timed(f"{users:,} users"):
            in_chunks(
                c,
                users,
                "INSERT INTO users (id, attributes, created_at, updated_at, version, "
                "evaluation_pending) SELECT CONCAT('u', LPAD(seq, 8, '0')), "
                "JSON_OBJECT('email', CONCAT('u', seq, '@example.com'), 'name', "
                "CONCAT('User ', seq)), NOW(6) - INTERVAL (seq % 2592000) SECOND, NOW(6), 1, 0 "
                "FROM seq_{lo}_to_{hi}",
            )
        # One cursor per user: 60% onboarding, 30% winback, 10% reactivation. 55% active at a
        # step (2, 3 or 4 steps done), 33% completed, 8% exited, 3% ended, 0.8% failed, 0.2%
        # diverged.
        status = (
            "CASE WHEN seq % 1000 < 550 THEN 'active' WHEN seq % 1000 < 880 THEN 'completed' "
            "WHEN seq % 1000 < 960 THEN 'exited' WHEN seq % 1000 < 990 THEN 'ended' "
            "WHEN seq % 1000 < 998 THEN 'failed' ELSE 'diverged' END"
        )
        with timed(f"{cursors:,} cursors"):
            in_chunks(
                c,
                cursors,
                "INSERT INTO campaign_cursors (campaign_id, user_id, status, entry_key, "
                "step_count, due_at, claimed_until, created_at, updated_at, ended_at, "
                "end_reason, error) SELECT "
                f"CASE WHEN seq % 10 < 6 THEN {onboarding} WHEN seq % 10 < 9 THEN {winback} "
                f"ELSE {reactivation} END, CONCAT('u', LPAD(seq, 8, '0')), {status}, "
                "CONCAT('u', LPAD(seq, 8, '0')), "
                "CASE WHEN seq % 1000 < 550 THEN 2 + seq % 3 WHEN seq % 1000 < 880 THEN 5 "
                "ELSE 1 + seq % 4 END, "
                "CASE WHEN seq % 1000 < 550 THEN NOW(6) + INTERVAL (seq % 259200) SECOND END, "
                "NULL, NOW(6) - INTERVAL (seq % 2592000) SECOND, NOW(6), "
                "CASE WHEN seq % 1000 >= 550 THEN NOW(6) - INTERVAL (seq % 86400) SECOND END, "
                "CASE WHEN seq % 1000 >= 990 AND seq % 1000 < 998 THEN "
                "CONCAT('the flow raised ', ELT(1 + seq % 3, 'KeyError(''plan'')', "
                "'ValueError(''no such plan'')', 'TypeError(''NoneType'')')) "
                "WHEN seq % 1000 >= 998 THEN 'the flow changed: step 3 is now wait(2 days)' "
                "WHEN seq % 1000 >= 880 AND seq % 1000 < 960 THEN "
                "'the user no longer matches the campaign''s segments' ELSE '' END, '' "
                "FROM seq_{lo}_to_{hi}",
            )
        step = (
            "ELT(s.seq, 'send_email', 'wait', 'send_email', 'wait', 'send_email'), "
            'ELT(s.seq, \'{{"template": "welcome"}}\', \'{{"seconds": 86400.0}}\', '
            '\'{{"template": "tips"}}\', \'{{"seconds": 259200.0}}\', '
            '\'{{"template": "final"}}\'), '
            'IF(s.seq % 2 = 1, \'{{"success": true, "status": "sent", "reason": "", '
            "\"outbox_id\": null}}', NULL), '{{}}'"
        )
        with timed("their step records"):
            in_chunks(
                c,
                cursors,
                "INSERT INTO campaign_cursor_steps (cursor_id, `index`, kind, args, result, "
                f"user_snapshot, created_at) SELECT k.id, s.seq - 1, {step}, k.created_at "
                "FROM campaign_cursors k JOIN seq_1_to_5 s ON s.seq <= k.step_count "
                "WHERE k.id BETWEEN {lo} AND {hi}",
            )
        # Five emails per cursor, one in ten a transaction's receipt.
        email_status = (
            "CASE WHEN seq % 1000 < 900 THEN 'sent' WHEN seq % 1000 < 950 THEN 'skipped' "
            "WHEN seq % 1000 < 960 THEN 'failed' WHEN seq % 1000 < 962 THEN 'queued' "
            "WHEN seq % 1000 < 963 THEN 'unknown' ELSE 'sent' END"
        )
        sent = "(seq % 1000 < 900 OR seq % 1000 >= 963)"
        with timed(f"{emails:,} outbox rows"):
            in_chunks(
                c,
                emails,
                "INSERT INTO outbox (`key`, user_id, to_address, from_address, subject, html, "
                "text, template_name, campaign_name, cursor_id, step_index, transaction_name, "
                "status, reason, message_id, provider, unsubscribe_url, attempts, created_at, "
                "updated_at, sent_at, delivered_at, bounced_at, opened_at, clicked_at, feedback) "
                "SELECT CONCAT('bench:', seq), CONCAT('u', LPAD(1 + seq % {n} DIV 5, 8, '0')), "
                "CONCAT('u', seq, '@example.com'), 'hello@example.com', 'Welcome', "
                "'<p>Hello</p>', 'Hello', "
                "IF(seq % 10 = 9, 'receipt', ELT(1 + seq % 3, 'welcome', 'tips', 'final')), "
                "IF(seq % 10 = 9, '', ELT(1 + (seq DIV 5) % 10, 'onboarding', 'onboarding', "
                "'onboarding', 'onboarding', 'onboarding', 'onboarding', 'winback', 'winback', "
                "'winback', 'reactivation')), IF(seq % 10 = 9, NULL, 1 + seq % {n} DIV 5), "
                "IF(seq % 10 = 9, NULL, (seq % 3) * 2), IF(seq % 10 = 9, 'receipt', ''), "
                f"{email_status}, CASE WHEN seq % 1000 >= 900 AND seq % 1000 < 950 THEN "
                "'the user has no email address (set the attribute `email`)' "
                "WHEN seq % 1000 >= 950 AND seq % 1000 < 960 THEN ELT(1 + seq % 2, "
                "'AnymailRequestsAPIError: 422 Invalid To address', 'gave up after 5 attempts') "
                "ELSE '' END, IF({sent}, CONCAT('m-', seq), ''), 'postmark', '', 1, "
                "NOW(6) - INTERVAL (seq % 2592000) SECOND, NOW(6), "
                "IF({sent}, NOW(6) - INTERVAL (seq % 2592000) SECOND, NULL), "
                "IF({sent} AND seq % 100 < 85, NOW(6) - INTERVAL (seq % 2592000) SECOND, NULL), "
                "IF({sent} AND seq % 100 = 99, NOW(6), NULL), "
                "IF({sent} AND seq % 100 < 30, NOW(6), NULL), "
                "IF({sent} AND seq % 100 < 6, NOW(6), NULL), '' FROM seq_{lo}_to_{hi}".replace(
                    "{sent}", sent
                ),
            )
        with timed(f"{events:,} events"):
            in_chunks(
                c,
                events,
                "INSERT INTO events (user_id, name, attributes, context, timestamp, created_at, "
                "processed_at) SELECT CONCAT('u', LPAD(1 + seq % {n} DIV 10, 8, '0')), "
                "ELT(1 + seq % 10, 'page_view', 'page_view', 'page_view', 'page_view', 'login', "
                "'purchase', 'email.delivered', 'email.opened', 'page_view', 'signup'), "
                "JSON_OBJECT('n', seq), '{{}}', NOW(6) - INTERVAL (seq % 5184000) SECOND, "
                "NOW(6) - INTERVAL (seq % 5184000) SECOND, "
                "IF(seq > {n} - 50, NULL, NOW(6)) FROM seq_{lo}_to_{hi}",
            )
        with timed("memberships"):
            in_chunks(
                c,
                users,
                "INSERT INTO segment_memberships (segment_id, user_id, created_at) SELECT "
                f"{everyone}, CONCAT('u', LPAD(seq, 8, '0')), NOW(6) FROM seq_{{lo}}_to_{{hi}}",
            )
            in_chunks(
                c,
                users,
                "INSERT INTO segment_memberships (segment_id, user_id, created_at) SELECT "
                f"{buyers}, CONCAT('u', LPAD(seq, 8, '0')), NOW(6) FROM seq_{{lo}}_to_{{hi}} "
                "WHERE seq % 5 = 0",
            )
        for segment, size in ((everyone, users), (buyers, users // 5)):
            c.execute(
                "INSERT INTO segment_snapshots (segment_id, at, occasion, members, entered, "
                "`left`, seconds) SELECT %s, NOW(6) - INTERVAL seq HOUR, 'hourly', "
                "%s - seq * %s, 0, 0, NULL FROM seq_1_to_720",
                [segment, size, max(1, size // 1000)],
            )
        c.execute("SET SESSION foreign_key_checks = 1, unique_checks = 1")
    with timed("the admin's counts, made from the tables"):
        from segflow.upkeep import rebuild_tallies

        rebuild_tallies()
    with timed("ANALYZE TABLE"), connection.cursor() as c:
        for table in (
            "users",
            "events",
            "campaign_cursors",
            "campaign_cursor_steps",
            "outbox",
            "segment_memberships",
            "tallies",
            "tally_deltas",
            "segment_snapshots",
        ):
            c.execute(f"ANALYZE TABLE {table}")
            c.fetchall()
    from segflow import tallies

    tallies.beat(tallies.TICK)
    return {"onboarding": onboarding, "everyone": everyone, "users": users}


def existing() -> dict:
    from campaigns.models import Campaign
    from segflow.config import load_config
    from segflow.live_config import live_config
    from segflow.models import Push, User
    from segments.models import Segment

    live_config.set(load_config(Push.objects.latest("id").location))
    return {
        "onboarding": Campaign.objects.get(name="onboarding").pk,
        "everyone": Segment.objects.get(name="everyone").pk,
        "users": User.objects.count(),
    }


def measure(ids: dict, repeat: int) -> list[tuple[str, str, float, float, int, float]]:
    from django.contrib.auth.models import User as StaffAccount
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    staff = StaffAccount.objects.filter(username="bench").first()
    staff = staff or StaffAccount.objects.create_superuser("bench", "bench@example.com", "x")
    client = Client()
    client.force_login(staff)
    pages = [
        ("home", "/admin/"),
        ("campaign list", "/admin/campaigns/campaign/"),
        ("campaign page (onboarding)", f"/admin/campaigns/campaign/{ids['onboarding']}/change/"),
        ("segment page (everyone)", f"/admin/segments/segment/{ids['everyone']}/change/"),
        ("segment list", "/admin/segments/segment/"),
        ("a user's page", "/admin/segflow/user/u00000042/change/"),
        ("a cursor's page", "/admin/campaigns/cursor/42/change/"),
        ("cursor list", "/admin/campaigns/cursor/"),
        ("outbox list", "/admin/delivery/outboxemail/"),
        ("event list", "/admin/segflow/event/"),
        ("segment members list", "/admin/segments/segmentmembership/"),
        ("failed cursors", "/admin/campaigns/cursor/?status__exact=failed"),
    ]
    results = []
    for name, url in pages:
        for _ in range(2):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                client.get(url)
                times.append(time.perf_counter() - started)
        slowest = max((float(q["time"]) for q in queries.captured_queries), default=0.0)
        results.append((name, url, statistics.median(times), max(times), len(queries), slowest))
        say(f"{name}: median {statistics.median(times) * 1000:.0f} ms")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 1,000,000 cursors")
    parser.add_argument("--database", default="hadminbench")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="measure a database kept by an earlier --keep"
    )
    args = parser.parse_args()
    if not args.reuse:
        create_database(args.database)
    setup(args.database)
    try:
        if args.reuse:
            ids = existing()
        else:
            started = time.monotonic()
            ids = fill(args.scale)
            say(f"filled in {time.monotonic() - started:.0f} s")
        results = measure(ids, args.repeat)
    finally:
        if not args.keep:
            drop_database()
    print(
        f"\nscale {args.scale}: {ids['users']:,} users and cursors, {5 * ids['users']:,} "
        f"outbox rows, {10 * ids['users']:,} events; warm, {args.repeat} runs each"
    )
    print(f"{'page':32} {'median':>9} {'slowest':>9} {'queries':>8} {'slowest query':>14}")
    for name, _, median, worst, queries, slowest in results:
        print(
            f"{name:32} {median * 1000:7.0f} ms {worst * 1000:7.0f} ms {queries:8} "
            f"{slowest * 1000:11.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
