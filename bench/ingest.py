#!/usr/bin/env python3
"""Ingest through the HTTP API, counting finished work: events processed, users evaluated and
their welcome email accepted by the provider. Production processes (granian, a Celery worker,
beat) over Redis, on MariaDB, emails through anymail's Postmark backend to a local stand-in.

    .venv/bin/python bench/ingest.py [--seconds 10] [--segments 3 30] [--users 2000]

The workload, for 3 segments and for 30:
- segments: "everyone", "pro" (an attribute match) and "buyers" (has a purchase event); with 30,
  also attribute thresholds, and segments counting a user's logins and purchases (a third each);
- campaigns: an onboarding campaign for everyone (a welcome email, a day's wait, tips), a
  two-email dynamic campaign for buyers; a transactional receipt on every purchase;
- events: `login`, and every tenth a `purchase`.

Phases: one event a request from 16 clients as fast as they go; the same paced at 500 events/s
(latency); 500 events a request (`POST /api/events`, and Segment's `/v1/batch`) from 16
clients; new users (`PUT /api/users/{id}`) from 8 clients, finished when their welcome email
reached the provider. "Finished" rates run from the first request to the last unit finished.
The resident memory of the production processes is sampled throughout.
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from harness import Deployment, scratch_dir, summary
from postmark_standin import PostmarkStandIn

HEADER = """
from datetime import timedelta

def onboarding(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("tips")

def upsell(ctx, rt):
    yield rt.send_email("thanks")
    yield rt.wait(days=1)
    yield rt.send_email("offer")

html = lambda user: "<p>Hello {{ user.name }}</p>"
config = {
    "email_provider": {"config": {"name": "postmark", "broadcast_message_stream": "broadcast"},
                       "from_address": "hello@example.com"},
    "templates": {name: {"subject": name.title(), "html": html}
                  for name in ("welcome", "tips", "thanks", "offer")},
    "campaigns": {
        "onboarding": {"segments": ["everyone"], "behavior": "static", "flow": onboarding},
        "upsell": {"segments": ["buyers"], "behavior": "dynamic", "flow": upsell},
    },
    "transactions": {"receipt": {"event": "purchase", "subject": "Receipt",
                                 "html": lambda user, event: "<p>Thank you</p>"}},
    "segments": {
"""

ATTRIBUTE = "SELECT u.id FROM users u WHERE JSON_EXTRACT(u.attributes, '$.score') > {n}"
COUNTING = (
    "SELECT e.user_id AS id FROM events e WHERE e.name = '{name}' "
    "GROUP BY e.user_id HAVING COUNT(*) >= {n}"
)


def config(segments: int) -> str:
    rows = {
        "everyone": "SELECT u.id FROM users u",
        "pro": "SELECT u.id FROM users u "
        "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'",
        "buyers": "SELECT DISTINCT e.user_id AS id FROM events e WHERE e.name = 'purchase'",
    }
    extra = segments - len(rows)
    for n in range(extra):
        kind = n % 3
        if kind == 0:
            rows[f"score-{n}"] = ATTRIBUTE.format(n=n)
        elif kind == 1:
            rows[f"logins-{n}"] = COUNTING.format(name="login", n=n // 3 + 2)
        else:
            rows[f"purchases-{n}"] = COUNTING.format(name="purchase", n=n // 3 + 2)
    lines = [f"        {name!r}: {{'sql': {sql!r}}}," for name, sql in rows.items()]
    return HEADER + "\n".join(lines) + "\n    },\n}\n"


def subject_count(standin: PostmarkStandIn, subject: str) -> int:
    return sum(n for (_, seen), n in list(standin.received.items()) if seen == subject)


class Api:
    """A small keep-alive-free HTTP client (one connection a request, as most backends do)."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def call(self, method: str, path: str, body: object, basic: bool = False) -> int:
        auth = (
            "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()
            if basic
            else f"Bearer {self.key}"
        )
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": auth, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status


class Memory:
    """Samples the production processes' resident memory in the background."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment, self.peak, self.peak_by_name = deployment, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            by_name = self.deployment.memory()
            if sum(by_name.values()) > self.peak:
                self.peak, self.peak_by_name = sum(by_name.values()), by_name

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        parts = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(self.peak_by_name.items()))
        return f"{self.peak / 2**20:.0f} MB ({parts})"


def load(clients: int, seconds: float, work: Callable[[int, int], int], rate: float = 0):
    """`clients` threads call work(client, i) (which returns the units it sent) for `seconds`,
    as fast as they can or `rate` units/s in all. Returns (units, elapsed, latencies)."""
    latencies: list[float] = []
    units = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one(n: int) -> None:
        mine, sent, i = [], 0, 0
        next_at = time.monotonic()
        while time.monotonic() < stop:
            if rate:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += clients / rate
            started = time.monotonic()
            sent += work(n, i)
            mine.append(time.monotonic() - started)
            i += 1
        with lock:
            latencies.extend(mine)
            units[0] += sent

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return units[0], time.monotonic() - started, latencies


def wait_until(count: Callable[[], int], target: int, timeout: float = 600) -> float:
    """Wait until count() reaches target; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while count() < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up: {count()} of {target} after {timeout} s")
        time.sleep(0.05)
    return time.monotonic()


def events_phase(
    deployment: Deployment,
    api: Api,
    label: str,
    clients: int,
    seconds: float,
    users: int,
    batch: int = 1,
    rate: float = 0,
    path: str = "",
) -> None:
    # The last id is also how many events the table holds (the benchmark deletes none, and its
    # inserts skip none). Past the buffer pool, a phase's figures fall as the table grows.
    first = deployment.query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0]
    reads_before = pages_read(deployment)

    def event(n: int, i: int, k: int = 0) -> dict:
        number = (n * 100_003 + i * batch + k) % 1_000_003
        return {
            "user_id": f"user-{number % users}",
            "name": "purchase" if number % 10 == 0 else "login",
        }

    def work(n: int, i: int) -> int:
        if batch == 1:
            body = event(n, i)
            api.call("POST", f"/api/users/{body['user_id']}/events", {"name": body["name"]})
        elif path == "/v1/batch":
            api.call(
                "POST",
                path,
                {
                    "batch": [
                        {"type": "track", "userId": e["user_id"], "event": e["name"]}
                        for e in (event(n, i, k) for k in range(batch))
                    ]
                },
                basic=True,
            )
        else:
            api.call("POST", "/api/events", {"events": [event(n, i, k) for k in range(batch)]})
        return batch

    cpu = CpuShares(deployment)
    started = time.monotonic()
    sent, elapsed, latencies = load(clients, seconds, work, rate)
    last_request = started + elapsed
    # Counted through the ids the phase added: counting the whole table read all of it, a few
    # hundred pages from disk once it outgrew the buffer pool, while the drains worked.
    total = deployment.query("SELECT COUNT(*) FROM events WHERE id > %s", (first,))[0][0]

    # Asked through the queue's index, so the question costs nothing: counting the processed
    # events took MariaDB a scan of the whole phase every 50 ms, which the phase then paid for.
    def finished() -> int:
        left = deployment.query(
            "SELECT id FROM events WHERE processed_at IS NULL AND id > %s LIMIT 1", (first,)
        )
        return 0 if left else total

    done_at = wait_until(finished, total)
    print(
        f"  {label}: {total / elapsed:8.0f} events/s accepted, "
        f"{total / (done_at - started):8.0f} events/s finished; last processed "
        f"{done_at - last_request:.2f} s after the last request; request {summary(latencies)}"
        f"\n    CPU per event: {cpu.per(total)}; pages MariaDB read from disk: "
        f"{pages_read(deployment) - reads_before:,}; events stored before the phase: {first:,}"
        f"\n    statements per event: {cpu.statements(total)}",
        flush=True,
    )


def pages_read(deployment: Deployment) -> int:
    """Pages the database server read from disk so far: once `events` outgrows the buffer pool,
    inserts into its indexes wait for them (see docs/commands.md, "The database server")."""
    rows = deployment.query("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_reads'")
    return int(rows[0][1])


@contextmanager
def buffer_pool(deployment: Deployment, size: str | None) -> Iterator[int]:
    """The server's InnoDB buffer pool, resized to `size` (as "512M") for the run and then back:
    the benchmark's MariaDB is shared, and the setting is the server's, not the database's."""
    (was,) = deployment.query("SELECT @@innodb_buffer_pool_size")[0]
    if size:
        deployment.query(f"SET GLOBAL innodb_buffer_pool_size = {parse_size(size)}")
        wait_resized(deployment)
    try:
        yield deployment.query("SELECT @@innodb_buffer_pool_size")[0][0]
    finally:
        if size:
            deployment.query(f"SET GLOBAL innodb_buffer_pool_size = {was}")
            wait_resized(deployment)


def parse_size(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if size[-1:].upper() in units:
        return int(size[:-1]) * units[size[-1].upper()]
    return int(size)


def wait_resized(deployment: Deployment) -> None:
    # The server resizes in the background; its status says when it has finished.
    for _ in range(600):
        rows = deployment.query("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'")
        status = rows[0][1] if rows else ""
        if not status or "complete" in status.lower():
            return
        time.sleep(0.1)


STATEMENT_KINDS = ("select", "insert", "update", "delete", "commit")


class CpuShares:
    """CPU time spent by each part from now on: the deployment's processes, the database and
    Redis, and this process (the load generator, and the Postmark stand-in's threads); and the
    statements the database server ran, by kind (the server's counters: this process's few
    queries are in them)."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.before = self._now()
        self.statements_before = self._statements()

    def _statements(self) -> dict[str, int]:
        rows = self.deployment.query(
            "SHOW GLOBAL STATUS WHERE Variable_name = 'Questions' OR Variable_name IN ({})".format(
                ", ".join(f"'Com_{kind}'" for kind in STATEMENT_KINDS)
            )
        )
        return {name.lower().removeprefix("com_"): int(value) for name, value in rows}

    def statements(self, units: int) -> str:
        """Statements per unit, all and by kind."""
        now = self._statements()
        spent = {k: now[k] - self.statements_before.get(k, 0) for k in now}
        kinds = ", ".join(f"{k} {spent.get(k, 0) / units:.1f}" for k in STATEMENT_KINDS)
        return f"{spent.get('questions', 0) / max(units, 1):.1f} ({kinds})"

    def _now(self) -> dict[str, float]:
        return {**self.deployment.cpu_seconds(), "load generator": time.process_time()}

    def per(self, units: int) -> str:
        spent = {k: v - self.before.get(k, 0.0) for k, v in self._now().items()}
        total = sum(spent.values())
        parts = ", ".join(f"{k} {v / units * 1000:.2f}" for k, v in spent.items() if v > 0)
        return f"{total / max(units, 1) * 1000:.2f} ms ({parts})"


def users_phase(
    deployment: Deployment, api: Api, standin: PostmarkStandIn, clients: int, seconds: float
) -> None:
    welcomed = subject_count(standin, "Welcome")
    prefix = f"new-{int(time.time())}"

    def work(n: int, i: int) -> int:
        api.call(
            "PUT",
            f"/api/users/{prefix}-{n}-{i}",
            {"attributes": {"email": f"{prefix}-{n}-{i}@example.com", "plan": "free"}},
        )
        return 1

    cpu = CpuShares(deployment)
    started = time.monotonic()
    created, elapsed, latencies = load(clients, seconds, work)
    done_at = wait_until(lambda: subject_count(standin, "Welcome") - welcomed, created)
    print(
        f"  new users, {clients} clients: {created / elapsed:6.0f} users/s accepted, "
        f"{created / (done_at - started):6.0f} users/s finished (evaluated, welcome email at "
        f"the provider); last welcome {done_at - started - elapsed:.2f} s after the last "
        f"request; request {summary(latencies)}\n    CPU per user: {cpu.per(created)}; "
        f"statements per user: {cpu.statements(created)}",
        flush=True,
    )


BEAT_LAYOUT = {
    "process": "in the worker (-B)",
    "thread": "in a thread of the worker",
    "own": "of its own",
}
PHASES = ("events", "paced", "batch", "v1", "users")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--segments", type=int, nargs="+", default=[3, 30])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="which phases to run (all by default)",
    )
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pool", default="prefork", help="the workers' pool: prefork or threads")
    parser.add_argument(
        "--beat",
        choices=("process", "thread", "own"),
        default="process",
        help="beat in the worker, as a child process (-B) or a thread (--beat-thread), "
        "or a process of its own",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the production processes (SEGFLOW_DRAIN_BATCH_SIZE=1000, ...)",
    )
    parser.add_argument(
        "--buffer-pool",
        metavar="SIZE",
        help="resize MariaDB's InnoDB buffer pool (512M, 1G) for the run, and back after it: "
        "the server's own size (128M unless configured) by default",
    )
    args = parser.parse_args()
    settings = dict(pair.split("=", 1) for pair in args.env)
    for segments in args.segments:
        with PostmarkStandIn() as standin:
            env = {
                "SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND": "0",
                "POSTMARK_API_URL": standin.url,
                "POSTMARK_SERVER_TOKEN": "bench-token",
                **settings,
            }
            deployment = Deployment(
                scratch_dir(),
                config(segments),
                concurrency=args.concurrency,
                pool=args.pool,
                embedded_beat=None if args.beat == "own" else args.beat,
                env=env,
            )
            try:
                stack = ExitStack()
                client = deployment.up(
                    workers=args.workers,
                    web_workers=args.web_workers,
                    web_threads=args.web_threads,
                )
                api = Api(deployment.url, deployment.api_key)
                pool = stack.enter_context(buffer_pool(deployment, args.buffer_pool))
                memory = Memory(deployment)
                deployment.query(
                    "INSERT INTO users (id, attributes, created_at, updated_at, version, "
                    "evaluation_pending) SELECT CONCAT('user-', seq - 1), JSON_OBJECT('email', "
                    "CONCAT('user-', seq - 1, '@example.com'), 'score', seq MOD 50, 'plan', "
                    "IF(seq MOD 4 = 0, 'pro', 'free')), NOW(6), NOW(6), 1, 1 "
                    f"FROM seq_1_to_{args.users}"
                )
                for start in range(0, args.users, 500):
                    client.emit_many(
                        {"user_id": f"user-{n}", "name": "login"}
                        for n in range(start, min(start + 500, args.users))
                    )
                wait_until(lambda: subject_count(standin, "Welcome"), args.users)
                print(
                    f"{segments} segments, {args.users} users (process layout: granian "
                    f"{args.web_workers} x {args.web_threads} threads, {args.workers} worker(s) "
                    f"x {args.concurrency} ({args.pool}), beat "
                    f"{BEAT_LAYOUT[args.beat]}; MariaDB's buffer pool {pool >> 20} MB):",
                    flush=True,
                )
                run = (deployment, api)
                if "events" in args.phases:
                    events_phase(
                        *run, "one event a request, 16 clients", 16, args.seconds, args.users
                    )
                if "paced" in args.phases:
                    events_phase(
                        *run, "same, paced at 500 events/s", 16, args.seconds, args.users, rate=500
                    )
                if "batch" in args.phases:
                    events_phase(
                        *run,
                        "POST /api/events, 500 a request, 16 clients",
                        16,
                        args.seconds,
                        args.users,
                        batch=500,
                    )
                if "v1" in args.phases:
                    events_phase(
                        *run,
                        "POST /v1/batch, 500 a request, 16 clients",
                        16,
                        args.seconds,
                        args.users,
                        batch=500,
                        path="/v1/batch",
                    )
                if "users" in args.phases:
                    users_phase(deployment, api, standin, 8, args.seconds)
                print(f"  peak memory of the production processes: {memory.stop()}", flush=True)
            finally:
                stack.close()
                deployment.down()


if __name__ == "__main__":
    main()
