"""Segment's own Python library (segment-analytics-python) pointed at a live segflow server.

A proxy stands between them, as a load balancer would: it passes the library's first batch on to
segflow but answers it 503 (as if the answer were lost), so the library sends the same batch
again. Everything is then read back through /api/: each message stored once, emails sent once.
"""

from __future__ import annotations

import gzip
import json
import threading
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from segment.analytics import Client as SegmentClient

from segflow.api_keys import create_api_key

from .conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)


class LosesFirstAnswer:
    """A proxy to `upstream` that answers the first POST with 503 after passing it on."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type", "content-encoding")
                }
                sent_body = gzip.decompress(body) if "gzip" in headers.values() else body
                proxy.requests.append(
                    {
                        "path": self.path,
                        "headers": headers,
                        "message_ids": [m["messageId"] for m in json.loads(sent_body)["batch"]],
                    }
                )
                request = urllib.request.Request(
                    upstream + self.path, data=body, headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, payload = answer.status, answer.read()
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                if len(proxy.requests) == 1:
                    status, payload = 503, b'{"error": "database: unavailable"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(live_server):
    proxy = LosesFirstAnswer(live_server.url)
    yield proxy
    proxy.close()


def read(url: str, key: str):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_segment_analytics_python_sends_to_segflow(live_server, proxy, pushed, compress):
    pushed()  # the example config: new users get `welcome`, a purchase `purchase-confirmation`
    _, key = create_api_key("segment-library")
    errors = []
    analytics = SegmentClient(
        write_key=key,
        host=proxy.url,
        gzip=compress,
        upload_interval=0.05,
        max_retries=3,
        on_error=lambda error, batch: errors.append(error),
    )
    try:
        # First flush: a new customer and her purchase (this batch is answered 503, and resent).
        analytics.identify("jane", {"email": "jane@example.com", "name": "Jane", "plan": "free"})
        analytics.track("jane", "purchase", {"orderId": "o-1", "amount": 30}, message_id="buy-o-1")
        analytics.flush()
        # Second flush: she reads a page; an order placed yesterday is imported with its time.
        analytics.page("jane", "Docs", "Pricing", {"url": "https://example.com/pricing"})
        analytics.track(
            "jane",
            "purchase",
            {"orderId": "o-0"},
            timestamp=datetime(2026, 1, 5, 12, 0, tzinfo=UTC),
        )
        analytics.flush()
        # Third flush: more about her, and someone anonymous.
        analytics.identify("jane", {"plan": "pro"})
        analytics.screen(anonymous_id="visitor-9", name="Home")
        analytics.group("jane", "acme", {"seats": 5})
        analytics.flush()
    finally:
        analytics.shutdown()
    assert errors == []

    # What the library sent: Basic auth with the key, gzipped if asked, and the first batch twice.
    batches = proxy.requests
    assert {r["path"] for r in batches} == {"/v1/batch"}
    assert all(r["headers"]["Authorization"].startswith("Basic ") for r in batches)
    assert all((r["headers"].get("Content-Encoding") == "gzip") == compress for r in batches)
    assert "buy-o-1" in batches[0]["message_ids"]
    assert batches[1]["message_ids"] == batches[0]["message_ids"]  # resent after the 503
    assert sum(len(r["message_ids"]) for r in batches[1:]) == 7  # every call, once

    jane = read(f"{live_server.url}/api/users/jane", key)
    assert jane["attributes"] == {
        "email": "jane@example.com",
        "name": "Jane",
        "plan": "pro",
        "groups": {"acme": {"seats": 5}},
    }
    assert jane["campaigns"][0]["campaign"] == "onboarding"
    events = read(f"{live_server.url}/api/users/jane/events", key)["results"]
    by_name = sorted((e["name"], e["attributes"].get("orderId")) for e in events)
    assert by_name == [("page", None), ("purchase", "o-0"), ("purchase", "o-1")]
    page = next(e for e in events if e["name"] == "page")
    assert page["attributes"] == {
        "url": "https://example.com/pricing",
        "name": "Pricing",
        "category": "Docs",
    }
    assert page["context"]["library"]["name"] == "analytics-python"
    assert all(e["message_id"] for e in events)  # the library's ids, kept
    imported = next(e for e in events if e["attributes"].get("orderId") == "o-0")
    assert imported["timestamp"] == "2026-01-05T12:00:00Z"
    visitor = read(f"{live_server.url}/api/users/visitor-9/events", key)["results"]
    assert [e["name"] for e in visitor] == ["screen"]

    # The resent batch stored nothing twice and sent nothing twice; the imported order no email.
    assert sorted(sent("jane")) == ["purchase-confirmation", "welcome"]
