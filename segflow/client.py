"""A Python client for the segflow HTTP API, using only the standard library.

    from segflow_client import Client  # installed with pip install ./clients/python
    # or, inside segflow's checkout, the same module: from segflow.client import Client

    client = Client.initialize(url="http://127.0.0.1:8000", api_key="sf_...")
    client.create_user("user123", {"email": "jane@example.com", "name": "Jane"})
    client.emit("user123", "purchase", {"orderId": "ord_123", "amount": 99.99})

It imports nothing from Django, so any Python program can use it.

Requests that fail for a passing reason (no connection, 429, 5xx) are tried again with
exponential backoff and jitter, honouring Retry-After. Every event carries a `message_id` (one is
made when the caller gives none), so the server stores a retried event once.

With `background=True`, `emit` returns at once and a thread sends the events in batches, like
Segment's analytics-python: `flush()` waits for them, and they are flushed at exit.
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import os
import queue
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "Client",
    "SegflowAuthError",
    "SegflowConnectionError",
    "SegflowError",
    "SegflowNotFound",
]

__version__ = "0.2"

logger = logging.getLogger("segflow.client")

# Statuses worth another try: the server or something before it is busy or briefly down.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"segflow-python/{__version__}"
DEFAULT_TIMEOUT = 10.0


class SegflowError(Exception):
    """A request failed. `status` is the HTTP status (None when no answer came), `message` the
    server's "error" text when it sent one, `body` the answer (parsed JSON, else text), and
    `retry_after` the seconds the server asked to wait, if it did."""

    def __init__(
        self,
        text: str,
        *,
        status: int | None = None,
        message: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(text)
        self.status = status
        self.message = message if message is not None else text
        self.body = body
        self.retry_after = retry_after

    @property
    def passing(self) -> bool:
        """Whether trying again later may succeed (no answer, 429 or a 5xx)."""
        return self.status is None or self.status in RETRY_STATUSES


class SegflowNotFound(SegflowError):
    """404: no such user."""


class SegflowAuthError(SegflowError):
    """401 or 403: the API key is missing, unknown or revoked."""


class SegflowConnectionError(SegflowError):
    """No answer: the server could not be reached, or did not answer within the timeout."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would resend the body, and the API key, somewhere else: report it instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Client:
    """Talks to one segflow server with one API key. Every request waits at most `timeout`
    seconds to connect and for each read of the answer."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        background: bool = False,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 10_000,
        on_error: Callable[[SegflowError, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"url: expected an http:// or https:// URL, got {url!r}")
        if not urllib.parse.urlsplit(url).netloc:
            raise ValueError(f"url: no host in {url!r}")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key: must be a non-empty string")
        if not api_key.strip().isascii() or not api_key.strip().isprintable():
            raise ValueError("api_key: must be printable ASCII, as the keys segflow makes are")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout: must be a positive number of seconds, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: must be a whole number of 0 or more, got {retries!r}")
        if not 1 <= batch_size <= 500:
            raise ValueError(f"batch_size: must be from 1 to 500, got {batch_size!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key.strip()
        self.timeout = float(timeout)
        self.retries, self.backoff, self.max_backoff = retries, float(backoff), float(max_backoff)
        self._opener = urllib.request.build_opener(_NoRedirects)
        self.background = background
        self._queue: _EventQueue | None = (
            _EventQueue(self, batch_size, flush_interval, max_queue_size, on_error)
            if background
            else None
        )

    def __repr__(self) -> str:
        # Never show the key itself.
        return f"Client(url={self.url!r}, api_key='{self.api_key[:6]}…', timeout={self.timeout})"

    @classmethod
    def initialize(
        cls, url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT, **options: Any
    ) -> Client:
        """Build a client (`options` as for `Client`) and check that the server answers and
        accepts the key."""
        client = cls(url=url, api_key=api_key, timeout=timeout, **options)
        client._check_health()
        try:
            client._request("GET", "/api/")  # the API's index: 200 for a good key, else 401
        except SegflowAuthError as exc:
            raise SegflowAuthError(
                f"the segflow server at {client.url} refused the API key: {exc.message}",
                status=exc.status,
                message=exc.message,
                body=exc.body,
            ) from exc
        return client

    # Users

    def create_user(self, user_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """Create the user, or replace all of their attributes (PUT). Returns the user."""
        return self._request("PUT", _user_path(user_id), {"attributes": attributes})

    def update_user(self, user_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """Merge `attributes` into the user's (PATCH; a None removes one). Returns the user."""
        return self._request("PATCH", _user_path(user_id), {"attributes": attributes})

    def get_user(self, user_id: str) -> dict[str, Any]:
        """The user: id, attributes, timestamps, segments and campaigns."""
        return self._request("GET", _user_path(user_id))

    def delete_user(self, user_id: str) -> None:
        """Delete the user and everything about them. A missing user raises SegflowNotFound."""
        self._request("DELETE", _user_path(user_id))

    # Events

    def emit(
        self,
        user_id: str,
        name: str,
        attributes: dict[str, Any] | None = None,
        *,
        message_id: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> dict[str, Any] | str:
        """Record the event `name` for the user (created if unknown). Returns the stored event,
        or, with `background=True`, its message id at once (the event is sent soon after).

        `message_id` makes the event idempotent (one is made when not given); `timestamp` is
        when it happened, if not now."""
        event: dict[str, Any] = {"name": name, "message_id": message_id or _new_message_id()}
        if attributes is not None:
            event["attributes"] = attributes
        if timestamp is not None:
            event["timestamp"] = timestamp
        if self._queue is not None:
            _user_path(user_id)  # refuse a bad id now, not in the background
            json.dumps(event, allow_nan=False, default=_json_default)
            self._queue.put({"user_id": user_id, **event})
            return event["message_id"]
        return self._request("POST", _user_path(user_id) + "/events", event)

    def emit_many(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record many events in one request, all of them or none: each a dict with `user_id`,
        `name` and optionally `attributes`, `message_id` and `timestamp` (at most 500 a call by
        default). Returns the events."""
        events = [
            event if event.get("message_id") else {**event, "message_id": _new_message_id()}
            for event in events
        ]
        return self._request("POST", "/api/events", {"events": events})["events"]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the background queue has sent everything (or `timeout` passed). Returns
        whether it is empty. Does nothing without `background=True`."""
        return self._queue.flush(timeout) if self._queue is not None else True

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush the background queue and stop its thread."""
        if self._queue is not None:
            self._queue.close(timeout)

    def list_events(self, user_id: str, page: int = 1, page_size: int = 50) -> dict[str, Any]:
        """One page of the user's events, newest first: {"count", "next", "previous",
        "results"}. The server caps page_size at 500."""
        for field, value in (("page", page), ("page_size", page_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}: must be a whole number of at least 1, got {value!r}")
        query = urllib.parse.urlencode({"page": page, "page_size": page_size})
        return self._request("GET", f"{_user_path(user_id)}/events?{query}")

    # HTTP

    def _check_health(self) -> None:
        try:
            answer = self._request("GET", "/api/health", auth=False)
        except SegflowConnectionError as exc:
            raise SegflowConnectionError(
                f"no segflow server answered at {self.url}: {exc.message}", body=exc.body
            ) from exc
        except SegflowError as exc:
            raise SegflowError(
                f"{self.url} does not look like a segflow server: {exc}",
                status=exc.status,
                message=exc.message,
                body=exc.body,
            ) from exc
        if not isinstance(answer, dict) or answer.get("status") != "ok":
            raise SegflowError(
                f"{self.url} does not look like a segflow server: "
                f"GET /api/health answered {answer!r}",
                status=200,
                body=answer,
            )

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """Send a request, trying again after a passing failure. Every request segflow takes is
        safe to repeat: reads, PUT and PATCH of the same attributes, DELETE, and events, which
        carry a message id."""
        attempt = 0
        while True:
            try:
                return self._request_once(method, path, body, auth=auth)
            except SegflowError as exc:
                if not exc.passing or attempt >= self.retries:
                    raise
                delay = self._delay(attempt, exc.retry_after)
                logger.info("%s; trying again in %.1fs", exc, delay)
                time.sleep(delay)
                attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, and at least what the server asked for."""
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return max(random.uniform(ceiling / 2, ceiling), retry_after or 0.0)

    def _request_once(self, method: str, path: str, body: Any = None, *, auth: bool) -> Any:
        what = f"{method} {path.split('?')[0]}"
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if auth:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            # Raises ValueError, before anything is sent, on NaN, infinity and lone surrogates.
            text = json.dumps(body, ensure_ascii=False, allow_nan=False, default=_json_default)
            data = text.encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                exc.close()
            if 300 <= status < 400:
                location = exc.headers.get("Location", "")
                raise SegflowError(
                    f"{what} failed with {status}: redirected to {location or '?'} "
                    f"(use that address as the client's url)",
                    status=status,
                    body=_decode(raw),
                ) from None
            raise _error(
                what, status, _decode(raw), _retry_after(exc.headers.get("Retry-After"))
            ) from None
        except TimeoutError:
            raise SegflowConnectionError(
                f"{what} failed: no answer from {self.url} within {self.timeout:g} seconds"
            ) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                text = f"no answer from {self.url} within {self.timeout:g} seconds"
            else:
                text = f"could not reach {self.url} ({reason})"
            raise SegflowConnectionError(f"{what} failed: {text}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SegflowConnectionError(
                f"{what} failed: the connection to {self.url} broke ({exc!r})"
            ) from None
        if not raw:
            return None
        decoded = _decode(raw)
        if isinstance(decoded, str):
            raise SegflowError(
                f"{what} answered {status} with a body that is not JSON: {decoded[:200]!r}",
                status=status,
                body=decoded,
            )
        return decoded


def _user_path(user_id: str) -> str:
    if not isinstance(user_id, str):
        raise TypeError(f"user_id: must be a string, got {type(user_id).__name__}")
    if not user_id:
        raise ValueError("user_id: must not be empty")
    if "/" in user_id:
        raise ValueError(f"user_id: must not contain '/', got {user_id!r}")
    if user_id in (".", ".."):
        # Proxies and servers may resolve these as path steps, reaching another URL.
        raise ValueError(f"user_id: {user_id!r} cannot be used in a URL")
    return "/api/users/" + urllib.parse.quote(user_id, safe="")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError(
                f"naive datetime {value.isoformat()}: give it a timezone, e.g. datetime.now(UTC)"
            )
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r}")


def _decode(raw: bytes) -> Any:
    """The answer as JSON when it is JSON, else as text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _error(what: str, status: int, body: Any, retry_after: float | None = None) -> SegflowError:
    message = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    shown = message or http.client.responses.get(status, "error")
    if message is None and isinstance(body, str) and body.strip():
        shown += f" ({body.strip()[:200]!r})"
    text = f"{what} failed with {status}: {shown}"
    if status == 404:
        cls: type[SegflowError] = SegflowNotFound
    elif status in (401, 403):
        cls = SegflowAuthError
    else:
        cls = SegflowError
    return cls(text, status=status, message=message or shown, body=body, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _new_message_id() -> str:
    return uuid.uuid4().hex


class _EventQueue:
    """Events waiting to be sent by a background thread, in batches.

    Safe to use from many threads. After a fork (gunicorn, Celery's prefork pool) the child
    starts with an empty queue and a thread of its own: events queued in the parent are the
    parent's to send. Whatever is queued is flushed when the interpreter exits.
    """

    def __init__(
        self,
        client: Client,
        batch_size: int,
        flush_interval: float,
        max_size: int,
        on_error: Callable[[SegflowError, list[dict[str, Any]]], None] | None,
    ) -> None:
        self.client = client
        self.batch_size, self.flush_interval, self.max_size = batch_size, flush_interval, max_size
        self.on_error = on_error
        self._lock = threading.Lock()
        self._reset()
        queues = weakref.WeakSet([self])
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: [q._reset() for q in list(queues)])
        atexit.register(_flush_at_exit, weakref.ref(self))

    def _reset(self) -> None:
        self._items: queue.Queue[dict[str, Any]] = queue.Queue(self.max_size)
        self._thread: threading.Thread | None = None
        self._stopping = False

    def put(self, event: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self._items.put_nowait(event)
        except queue.Full:
            error = SegflowError(f"the background queue is full ({self.max_size} events)")
            self._report(error, [event])

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._items.unfinished_tasks:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float | None) -> None:
        self.flush(timeout)
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._run, name="segflow-client-queue", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not (self._stopping and self._items.empty()):
            batch = self._next_batch()
            if not batch:
                continue
            try:
                self.client.emit_many(batch)
            except SegflowError as exc:
                self._report(exc, batch)
            except Exception as exc:  # a bug must not kill the thread and strand the queue
                self._report(SegflowError(f"sending a batch raised {exc!r}"), batch)
            finally:
                for _ in batch:
                    self._items.task_done()

    def _next_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._items.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _report(self, error: SegflowError, events: list[dict[str, Any]]) -> None:
        if self.on_error is None:
            logger.error("segflow: %s events were not sent: %s", len(events), error)
            return
        try:
            self.on_error(error, events)
        except Exception:
            logger.exception("segflow: the on_error callback raised")


def _flush_at_exit(reference: weakref.ref) -> None:
    events = reference()
    if events is not None:
        events.flush(timeout=10.0)
