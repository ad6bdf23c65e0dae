#!/usr/bin/env python3
"""Event ingest through the HTTP API: events per second and latency, and whether processing
keeps up. gunicorn, two Celery workers and beat over Redis, on MariaDB.

    .venv/bin/python bench/ingest.py [--seconds 15]

Runs with 3 and with 30 segments defined (half attribute segments, half event segments), with one
client and with 16 concurrent clients, each sending `POST /api/users/{id}/events` for existing
users as fast as it can; then 16 clients sending `POST /api/events` with --batch events each, as
fast as they can and then paced at 1,000 events/s in all, to see whether processing keeps up.
"""

from __future__ import annotations

import argparse
import threading
import time

from harness import Deployment, scratch_dir, summary


def config(segments: int) -> str:
    lines = []
    for n in range(segments):
        if n % 2:
            sql = (
                "SELECT e.user_id AS id FROM events e WHERE e.name = 'purchase' "
                f"GROUP BY e.user_id HAVING COUNT(*) > {n}"
            )
        else:
            sql = f"SELECT u.id FROM users u WHERE JSON_EXTRACT(u.attributes, '$.score') > {n}"
        lines.append(f'        "s{n}": {{"sql": "{sql}"}},')
    return 'config = {\n    "segments": {\n' + "\n".join(lines) + "\n    },\n}\n"


def run(
    deployment: Deployment, client, clients: int, seconds: float, batch: int = 1, rate: float = 0
) -> None:
    """`clients` threads send events for `seconds`, as fast as they can, or `rate` events/s in
    all; then wait until every event is processed."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    before = deployment.query("SELECT COUNT(*) FROM events")[0][0]

    def one_client(n: int) -> None:
        mine = []
        i = 0
        next_at = time.monotonic()
        while time.monotonic() < stop:
            if rate:  # paced: each client sends its share of `rate`
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += batch * clients / rate
            started = time.monotonic()
            if batch == 1:
                client.emit(f"user-{(n * 7919 + i) % 1000}", "purchase", {"amount": 5})
            else:
                client.emit_many(
                    {"user_id": f"user-{(n * 7919 + i + k) % 1000}", "name": "purchase"}
                    for k in range(batch)
                )
            mine.append(time.monotonic() - started)
            i += batch
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # Processing keeps up if the backlog of unprocessed events empties soon after.
    drained_at = time.monotonic()
    while deployment.query("SELECT COUNT(*) FROM events WHERE processed_at IS NULL")[0][0]:
        time.sleep(0.2)
    backlog = time.monotonic() - drained_at
    sent = deployment.query("SELECT COUNT(*) FROM events")[0][0] - before
    how = f"{clients:>2} client(s)" + (f", {batch} events a request" if batch > 1 else "")
    how += f", paced at {rate:.0f} events/s" if rate else ""
    print(
        f"  {how}: {sent / elapsed:7.0f} events/s accepted (request latency "
        f"{summary(latencies)}); all processed {backlog:.1f} s after the last was accepted",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--batch", type=int, default=100, help="events per POST /api/events")
    args = parser.parse_args()
    for segments in (3, 30):
        deployment = Deployment(scratch_dir(), config(segments))
        try:
            client = deployment.up(workers=2)
            for n in range(1000):
                client.create_user(f"user-{n}", {"score": n % 50})
            time.sleep(2)
            print(f"{segments} segments:", flush=True)
            for clients in (1, 16):
                run(deployment, client, clients, args.seconds)
            run(deployment, client, 16, args.seconds, batch=args.batch)
            run(deployment, client, 16, args.seconds, batch=args.batch, rate=1000)
        finally:
            deployment.down()


if __name__ == "__main__":
    main()
