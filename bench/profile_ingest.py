#!/usr/bin/env python3
"""What one event (or user write, `--path`) costs the web process: `POST /api/users/{id}/events`
through Django's WSGI application in one process and one thread, on MariaDB, without Celery or
granian in between.

    .venv/bin/python bench/profile_ingest.py [--requests 2000] [--repeat 3] [--cprofile]

Each request carries a fresh `message_id`, as `segflow.client` sends, for one of 1,000 existing
users. The work an event hands out after commit is not run: the hand-out is replaced by a no-op in
this process (the doorbell that would wake the workers is silent), so only the ingest itself is
measured, in production mode (a broker is set: nothing is evaluated during the request).
Prints requests per second and the CPU time this process spent per request (the database's is
not in it) and the statements its connection sent per request (`SET autocommit` and `COMMIT`
included, pings not); `--cprofile` prints the functions that took the most time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import sys
import time
import uuid
from types import SimpleNamespace

from harness import django_here

USERS = 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds, each of --requests")
    parser.add_argument("--cprofile", action="store_true", help="profile one more round")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="move what warming up made out of the garbage collector's sight (gc.freeze)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=0,
        help="the youngest generation's threshold (gc.set_threshold; Python's default 700)",
    )
    parser.add_argument(
        "--django", action="store_true", help="Django's application alone, without the lean path"
    )
    parser.add_argument(
        "--path",
        choices=[
            "user-events",
            "bare-event",
            "v1-track",
            "new-user",
            "patch-user",
            "batch",
            "v1-batch",
        ],
        default="user-events",
        help="an event for a known user (with a message id, without one, or through /v1/), "
        "PUT of a new user, PATCH of a known one, POST /api/events of 500 events (or /v1/batch "
        "of 500 tracks)",
    )
    args = parser.parse_args()
    # One connection for the whole run, so that its statement count covers every request.
    # Production mode (a broker is set), so the answers are those workers leave to do later.
    with django_here(
        "profile_ingest", CONN_MAX_AGE="86400", CELERY_BROKER_URL="redis://127.0.0.1:6379/15"
    ):
        run(args)


def run(args) -> None:
    from django.core.wsgi import get_wsgi_application
    from django.db import connection

    from segflow import dispatch
    from segflow.api.lean import LeanIngest
    from segflow.api_keys import create_api_key
    from segflow.models import User

    # Only the ingest is measured: the doorbell it rings for workers is silent here.
    dispatch._hand_out = lambda task_name, args: None
    silent = SimpleNamespace(ring=lambda queue: None, answered=lambda queue: None)
    dispatch._doorbell = lambda: silent
    _, key = create_api_key("profile")
    User.objects.bulk_create(User(id=f"user-{n}", attributes={}) for n in range(USERS))
    # As segflow_project.wsgi serves it: the lean path first (--django: Django's alone).
    application = get_wsgi_application()
    if not args.django:
        application = LeanIngest(application)
    counter = iter(range(10**9))

    def one() -> None:
        n = next(counter)
        method = "POST"
        if args.path == "new-user":
            method, path, authorization = "PUT", f"/api/users/new-{n}", f"Bearer {key}"
            body = {"attributes": {"email": f"new-{n}@example.com", "plan": "free"}}
        elif args.path == "patch-user":
            method, path = "PATCH", f"/api/users/user-{n % USERS}"
            authorization = f"Bearer {key}"
            body = {"attributes": {"plan": "pro" if n % 2 else "free"}}
        elif args.path == "batch":
            path, authorization = "/api/events", f"Bearer {key}"
            body = {
                "events": [
                    {"user_id": f"user-{(n * 500 + k) % USERS}", "name": "login"}
                    for k in range(500)
                ]
            }
        elif args.path == "v1-batch":
            path, authorization = "/v1/batch", "Basic " + _b64(f"{key}:")
            body = {
                "batch": [
                    {"type": "track", "userId": f"user-{(n * 500 + k) % USERS}", "event": "login"}
                    for k in range(500)
                ]
            }
        elif args.path in ("user-events", "bare-event"):
            path, authorization = f"/api/users/user-{n % USERS}/events", f"Bearer {key}"
            body = {"name": "purchase", "attributes": {"amount": 5}, "message_id": uuid4()}
            if args.path == "bare-event":
                body = {"name": "login"}
        else:
            path = "/v1/track"
            authorization = "Basic " + _b64(f"{key}:")
            body = {
                "userId": f"user-{n % USERS}",
                "event": "purchase",
                "properties": {"amount": 5},
                "messageId": uuid4(),
            }
        data = json.dumps(body).encode()
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": authorization,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": io.BytesIO(data),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        status = []
        response = application(environ, lambda s, headers, exc_info=None: status.append(s))
        b"".join(response)
        getattr(response, "close", lambda: None)()
        if not status[0].startswith(("200", "201")):
            raise SystemExit(f"{path}: {status[0]}")

    def statements() -> int:
        """Statements this process's connection has sent (SET autocommit and COMMIT too)."""
        with connection.cursor() as cursor:
            cursor.execute("SHOW SESSION STATUS LIKE 'Questions'")
            return int(cursor.fetchone()[1])

    for _ in range(200):  # warm up: imports, connections, caches
        one()
    if args.gc_freeze:
        gc.freeze()
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    collecting = CollectorTime()
    for round_ in range(1, args.repeat + 1):
        before = statements()
        collecting.reset()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.requests):
            one()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sent = statements() - before - 1  # less the SHOW STATUS of `before`
        print(
            f"round {round_}: {args.requests} requests in {wall:.2f} s: "
            f"{args.requests / wall:,.0f} requests/s, {wall / args.requests * 1000:.2f} ms "
            f"a request, {cpu / args.requests * 1000:.2f} ms CPU a request (this process), "
            f"{sent / args.requests:.2f} statements a request, "
            f"{collecting.seconds / args.requests * 1000:.2f} ms a request in the garbage "
            f"collector ({collecting.full} full collections)"
        )
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            one()
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)


class CollectorTime:
    """Time spent in Python's cyclic garbage collector, and how many collections were of the
    oldest generation (which walk every object the process holds)."""

    def __init__(self) -> None:
        self.reset()
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.seconds, self.full, self._started = 0.0, 0, 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full += info["generation"] == 2


def uuid4() -> str:
    return str(uuid.uuid4())


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


if __name__ == "__main__":
    main()
