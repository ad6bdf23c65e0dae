"""A Python client for the segflow HTTP API, using only the standard library.

    from segflow_client import Client  # installed with pip install ./clients/python
    # or, inside segflow's checkout, the same module: from segflow.client import Client

    client = Client.initialize(url="http://127.0.0.1:8000", api_key="sf_...")
    client.create_user("user123", {"email": "jane@example.com", "name": "Jane"})
    client.emit("user123", "purchase", {"orderId": "ord_123", "amount": 99.99})

It imports nothing from Django, so any Python program can use it.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "Client",
    "SegflowAuthError",
    "SegflowConnectionError",
    "SegflowError",
    "SegflowNotFound",
]

__version__ = "0.1"
USER_AGENT = f"segflow-python/{__version__}"
DEFAULT_TIMEOUT = 10.0


class SegflowError(Exception):
    """A request failed. `status` is the HTTP status (None when no answer came), `message` the
    server's "error" text when it sent one, and `body` the answer (parsed JSON, else text)."""

    def __init__(
        self, text: str, *, status: int | None = None, message: str | None = None, body: Any = None
    ) -> None:
        super().__init__(text)
        self.status = status
        self.message = message if message is not None else text
        self.body = body


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

    def __init__(self, url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT) -> None:
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
        self.url = url.rstrip("/")
        self.api_key = api_key.strip()
        self.timeout = float(timeout)
        self._opener = urllib.request.build_opener(_NoRedirects)

    def __repr__(self) -> str:
        # Never show the key itself.
        return f"Client(url={self.url!r}, api_key='{self.api_key[:6]}…', timeout={self.timeout})"

    @classmethod
    def initialize(cls, url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT) -> Client:
        """Build a client and check that the server answers and accepts the key."""
        client = cls(url=url, api_key=api_key, timeout=timeout)
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
        self, user_id: str, name: str, attributes: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record the event `name` for the user (created if unknown). Returns the event."""
        body: dict[str, Any] = {"name": name}
        if attributes is not None:
            body["attributes"] = attributes
        return self._request("POST", _user_path(user_id) + "/events", body)

    def emit_many(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record many events in one request, all of them or none: each a dict with `user_id`,
        `name` and optionally `attributes` (at most 500 a call by default). Returns the events."""
        return self._request("POST", "/api/events", {"events": list(events)})["events"]

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
            raise _error(what, status, _decode(raw)) from None
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


def _error(what: str, status: int, body: Any) -> SegflowError:
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
    return cls(text, status=status, message=message or shown, body=body)
