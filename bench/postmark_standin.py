#!/usr/bin/env python3
"""A local stand-in for Postmark's email API, fast enough to measure segflow rather than itself.

It takes `POST /email` (one message) and `POST /email/batch` (a list of up to 500) as Postmark
does, answers each at once with a message id, and counts the messages it accepted, per
recipient and subject too. Point anymail at it with `POSTMARK_API_URL` (its `url`). Set `delay`
(seconds) to make it answer slowly; `arrived` counts the calls that came in, answered or not.

    from postmark_standin import PostmarkStandIn
    with PostmarkStandIn() as standin:      # or .start() ... .stop()
        ...                                  # standin.url, standin.count, standin.received

    .venv/bin/python bench/postmark_standin.py --port 8025   # until Ctrl-C, counting

Two details keep kept-alive connections from stalling about 40 ms a request (Nagle's algorithm
waiting for a delayed ACK): every answer goes out in one write, headers and body together, and
TCP_NODELAY is on.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SUBMITTED_AT = "2026-12-01T09:00:00.0000000Z"


class PostmarkStandIn:
    """A threaded HTTP server answering like Postmark's API; `count` is the messages accepted,
    `received` each (To, Subject) counted, so a message sent twice shows up there."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.count = 0
        self.requests = 0
        self.arrived = 0
        self.delay = 0.0
        self.received: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> PostmarkStandIn:
        standin = self

        class Handler(_Handler):
            def accept(self, messages: list[dict]) -> None:
                standin._accept(messages)

            def arrive(self) -> None:
                standin._arrive()

        self._server = _Server((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> PostmarkStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _arrive(self) -> None:
        with self._lock:
            self.arrived += 1
        if self.delay:
            time.sleep(self.delay)

    def _accept(self, messages: list[dict]) -> None:
        with self._lock:
            self.requests += 1
            self.count += len(messages)
            for message in messages:
                self.received[(str(message.get("To", "")), str(message.get("Subject", "")))] += 1


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A worker killed at the end of a benchmark resets its kept-alive connections.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive: anymail's requests.Session sends a batch's messages over one connection.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def accept(self, messages: list[dict]) -> None:
        raise NotImplementedError

    def arrive(self) -> None:
        raise NotImplementedError

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.arrive()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer(422, {"ErrorCode": 402, "Message": "Invalid JSON"})
        if self.path.rstrip("/") == "/email" and isinstance(body, dict):
            self.accept([body])
            return self._answer(200, _accepted(body))
        if self.path.rstrip("/") == "/email/batch" and isinstance(body, list):
            self.accept(body)
            return self._answer(200, [_accepted(message) for message in body])
        return self._answer(404, {"ErrorCode": 404, "Message": f"no endpoint {self.path}"})

    def _answer(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            self.wfile.write(head + body)  # one write: see the module's docstring
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


def _accepted(message: dict) -> dict:
    return {
        "To": message.get("To", ""),
        "SubmittedAt": SUBMITTED_AT,
        "MessageID": str(uuid.uuid4()),
        "ErrorCode": 0,
        "Message": "OK",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    with PostmarkStandIn(args.host, args.port) as standin:
        print(f"Postmark stand-in at {standin.url} (POSTMARK_API_URL); Ctrl-C stops it")
        last = -1
        try:
            while True:
                time.sleep(1)
                if standin.count != last:
                    last = standin.count
                    print(f"{standin.count} message(s) accepted", flush=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
