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

It also pushes a config to a running server from a machine that has only this file (CI), with a
key of the scope `push`:

    SEGFLOW_PUSH_KEY=sf_... python -m segflow_client push --server https://segflow.example.com \\
        --config marketing/segflow_config.py --dry-run

`collect_bundle` decides what a push carries (the config's folder: see its docstring); the
server's `manage.py segflow_push` bundles with the same code.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import http.client
import importlib.util
import json
import logging
import os
import queue
import random
import subprocess
import sys
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
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLE_SUFFIXES",
    "Client",
    "SegflowAuthError",
    "SegflowBundleError",
    "SegflowConnectionError",
    "SegflowError",
    "SegflowNotFound",
    "bundle_fingerprint",
    "collect_bundle",
    "main",
]

__version__ = "0.2"

logger = logging.getLogger("segflow.client")

# Statuses worth another try: the server or something before it is busy or briefly down.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"segflow-python/{__version__}"
DEFAULT_TIMEOUT = 10.0
# A push evaluates the new and changed segments for every user before it answers.
PUSH_TIMEOUT = 600.0


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


class SegflowBundleError(SegflowError):
    """The config cannot be bundled for a push: no such file, a file that is not text, too big."""


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

    # Pushing a config (a key of the scope `push`; the server must allow remote pushes)

    def push(
        self,
        config: str | dict[str, Any],
        *,
        dry_run: bool = False,
        timeout: float = PUSH_TIMEOUT,
    ) -> dict[str, Any]:
        """Push a config to the server: `config` is its location (a .py path or a dotted module,
        bundled with `collect_bundle`) or a bundle made by it. The server validates it as a
        local `manage.py segflow_push` does and applies it, or with `dry_run` only plans it.

        Returns the server's answer: {"plan": the text a local push prints, "changed": bool,
        "dry_run": bool, "version": {"number", "fingerprint", "git_commit", ...} or None}. A
        config the server refuses raises SegflowError with the server's message."""
        bundle = collect_bundle(config) if isinstance(config, str) else config
        body = {"bundle": bundle, "dry_run": bool(dry_run)}
        return self._request("POST", "/api/push", body, timeout=timeout, retry=False)

    def rollback(
        self, to: int | None = None, *, dry_run: bool = False, timeout: float = PUSH_TIMEOUT
    ) -> dict[str, Any]:
        """Apply again a version the server keeps: `to` (a version number), or else the one
        that was live before the current one. Answers as `push` does."""
        if to is not None and (isinstance(to, bool) or not isinstance(to, int) or to < 1):
            raise ValueError(f"to: must be a version number (1 or more), got {to!r}")
        body = {"to": to, "dry_run": bool(dry_run)}
        return self._request("POST", "/api/push/rollback", body, timeout=timeout, retry=False)

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

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        timeout: float | None = None,
        retry: bool = True,
    ) -> Any:
        """Send a request, trying again after a passing failure (unless `retry` is False). Every
        request segflow takes is safe to repeat: reads, PUT and PATCH of the same attributes,
        DELETE, and events, which carry a message id."""
        attempt = 0
        while True:
            try:
                return self._request_once(method, path, body, auth=auth, timeout=timeout)
            except SegflowError as exc:
                if not retry or not exc.passing or attempt >= self.retries:
                    raise
                delay = self._delay(attempt, exc.retry_after)
                logger.info("%s; trying again in %.1fs", exc, delay)
                time.sleep(delay)
                attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, and at least what the server asked for."""
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return max(random.uniform(ceiling / 2, ceiling), retry_after or 0.0)

    def _request_once(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool,
        timeout: float | None = None,
    ) -> Any:
        what = f"{method} {path.split('?')[0]}"
        timeout = self.timeout if timeout is None else timeout
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
            with self._opener.open(request, timeout=timeout) as response:
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
                f"{what} failed: no answer from {self.url} within {timeout:g} seconds"
            ) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                text = f"no answer from {self.url} within {timeout:g} seconds"
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


# ---------------------------------------------------------------------------------------------
# Bundling a config for a push: what the server stores in its database and every worker runs.
# `manage.py segflow_push` bundles with this same code, so a local push and a remote one carry
# the same files.

BUNDLE_SUFFIXES = (".py", ".html", ".htm", ".txt", ".css")
BUNDLE_MAX_FILES = 1000
BUNDLE_MAX_BYTES = 5 * 1024 * 1024
_SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "site-packages"})


def config_file(location: str) -> Path:
    """The file of the config at `location`: a .py path (or any existing file), or a dotted
    module name (found without running the module itself)."""
    path = Path(location)
    if location.endswith(".py") or path.exists():
        path = path.expanduser().resolve()
        if not path.is_file():
            raise SegflowBundleError(f"config: no file at {path}")
        return path
    try:
        spec = importlib.util.find_spec(location)
    except (ImportError, ValueError) as exc:
        raise SegflowBundleError(f"config: importing module {location!r} failed: {exc!r}") from exc
    if spec is None:
        missing = ModuleNotFoundError(f"No module named {location!r}")
        raise SegflowBundleError(f"config: importing module {location!r} failed: {missing!r}")
    if not spec.origin or not spec.origin.endswith(".py"):
        raise SegflowBundleError(
            f"config: module {location!r} is not a .py file ({spec.origin}); give the config's "
            "file path"
        )
    return Path(spec.origin).resolve()


def collect_bundle(location: str, *, max_bytes: int = BUNDLE_MAX_BYTES) -> dict[str, Any]:
    """The config at `location` (a .py path or a dotted module) and the files beside it.

    The bundle holds every file under the config file's folder, subfolders included, whose name
    ends in .py, .html, .htm, .txt or .css: the config module, the email templates it names,
    the templates they extend or include, and the modules beside it that it imports. Left out
    are hidden files and folders (a name starting with "."), `__pycache__`, `node_modules`,
    `site-packages`, virtual environments (a folder with a `pyvenv.cfg`) and every other kind
    of file. At most 1000 files and `max_bytes` bytes in all, each UTF-8 text. Keep the config
    in a folder of its own, with its templates.

    Nothing is run. When the folder is in a Git work tree, the bundle also says the commit
    checked out (`git rev-parse HEAD`) and whether the folder has changes not committed.
    """
    path = config_file(location)
    folder = path.parent
    files: dict[str, str] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(
            name
            for name in dirnames
            if not name.startswith(".")
            and name not in _SKIPPED_FOLDERS
            and not (here / name / "pyvenv.cfg").exists()
        )
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(BUNDLE_SUFFIXES):
                continue
            relative = (here / name).relative_to(folder).as_posix()
            try:
                data = (here / name).read_bytes()
            except OSError as exc:
                raise SegflowBundleError(f"config: cannot read {here / name}: {exc}") from exc
            total += len(data)
            if total > max_bytes or len(files) >= BUNDLE_MAX_FILES:
                raise SegflowBundleError(
                    f"config: the files in {folder} (every .py, .html, .htm, .txt and .css file "
                    f"under it) come to more than {max_bytes} bytes or {BUNDLE_MAX_FILES} files; "
                    "keep the config and its templates in a folder of their own"
                )
            try:
                files[relative] = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SegflowBundleError(
                    f"config: {here / name} is not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from exc
    commit, dirty = _git_state(folder)
    entry = path.name
    return {
        "location": location,
        "entry": entry,
        "files": files,
        "fingerprint": bundle_fingerprint(entry, files),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def bundle_fingerprint(entry: str, files: dict[str, str]) -> str:
    """What tells two bundles apart: the SHA-256 of the entry module's name and every file."""
    canonical = json.dumps([entry, sorted(files.items())], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _git_state(folder: Path) -> tuple[str | None, bool | None]:
    """The commit checked out in the folder's Git work tree, and whether the folder differs
    from it; (None, None) outside a work tree or without git."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--verify", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=normal", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, dirty


# ---------------------------------------------------------------------------------------------
# The command line: python -m segflow_client push ... (or python -m segflow.client push ...)


def main(argv: list[str] | None = None) -> int:
    """`push`: push a config to a running segflow server, or roll it back, and print the plan.

    The key comes from the environment variable SEGFLOW_PUSH_KEY (never from the command line,
    where other users and CI logs could read it). Exits with 1 when the push fails or is refused.
    """
    parser = argparse.ArgumentParser(
        prog="python -m segflow_client",
        description="Push a segflow config to a running server (the key comes from "
        "SEGFLOW_PUSH_KEY).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser(
        "push",
        help="push a config, or roll back to a version the server keeps",
        description="Bundle the config and its files, send them to the server, print the plan.",
    )
    push.add_argument("--server", required=True, help="the server's URL, e.g. https://...")
    push.add_argument(
        "--config",
        default=os.environ.get("SEGFLOW_CONFIG") or "segflow_config.py",
        help="the config to push: a .py path or a dotted module (default: SEGFLOW_CONFIG, "
        "else segflow_config.py)",
    )
    push.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    push.add_argument(
        "--rollback",
        action="store_true",
        help="apply again the version that was live before the current one (or --to N)",
    )
    push.add_argument("--to", type=int, metavar="N", help="with --rollback: the version to apply")
    push.add_argument("--timeout", type=float, default=PUSH_TIMEOUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.to is not None and not args.rollback:
        parser.error("--to goes with --rollback")
    key = os.environ.get("SEGFLOW_PUSH_KEY", "")
    if not key.strip():
        print(
            "error: set SEGFLOW_PUSH_KEY to a key of the scope `push` (on the server: "
            "manage.py segflow_create_api_key NAME --scope push)",
            file=sys.stderr,
        )
        return 1
    try:
        client = Client(url=args.server, api_key=key)
        for line in push_lines(client, args.config, args.dry_run, args.rollback, args.to, args):
            print(line, flush=True)
    except (SegflowError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1
    return 0


def push_lines(client: Client, location, dry_run, rollback, to, args=None):
    """What a remote push prints, line by line, as `manage.py segflow_push` prints a local one."""
    timeout = getattr(args, "timeout", PUSH_TIMEOUT)
    suffix = " (dry run)" if dry_run else ""
    if rollback:
        what = f"version {to}" if to else "the previous version"
        yield f"Rolling back to {what} on {client.url}{suffix} ..."
        answer = client.rollback(to, dry_run=dry_run, timeout=timeout)
    else:
        bundle = collect_bundle(location)
        yield f"Pushing {location} to {client.url}{suffix} ..."
        answer = client.push(bundle, dry_run=dry_run, timeout=timeout)
    for warning in answer.get("warnings") or []:  # (a server before warnings sends none)
        yield f"Warning: {warning}"
    yield answer["plan"]
    if answer.get("outcome"):
        yield answer["outcome"]


if __name__ == "__main__":
    sys.exit(main())
