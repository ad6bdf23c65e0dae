"""The calls app backends make most, answered without Django's request machinery.

`POST /api/users/{id}/events` (one event, `client.emit`), `POST /api/events` (a batch,
`client.emit_many`) and `PUT`/`PATCH /api/users/{id}` (`client.create_user`, `update_user`) are
most of an app's traffic, and on a small machine Django's handler, its middleware and DRF's view
cost more CPU than storing an event (bench/README.md). `LeanIngest` wraps the WSGI application:
a well-formed call with a valid `ingest` key is answered here, by the same parts the views use
(the key cache, the JSON parser, the checks, `segflow.users`, the renderer), with the same
status, headers and bytes. Anything else (another path or method, a query string, an unusual
header, a body, key or host that the checks refuse) goes on to Django untouched, which answers it
as ever, errors and logging included. So this path answers only what Django would have answered
with a 200 or a 201, and the same way; tests/test_api_lean_path.py holds it to that.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.core import signals
from django.http.request import split_domain_port, validate_host

from segflow import users as user_service
from segflow.api_keys import find_api_key

from . import validation
from .errors import outage_of, unavailable, unexpected
from .parsers import strict_json
from .renderers import FastJSONRenderer
from .selectors import events_answer, recorded_detail, user_detail

_USER = re.compile(r"/api/users/([^/]+)")
_USER_EVENTS = re.compile(r"/api/users/([^/]+)/events")
_EVENTS = re.compile(r"/api/events()")  # (an empty group: no user in this path)
_JSON = frozenset({"application/json", "application/json; charset=utf-8"})
_ANY_JSON_ACCEPT = frozenset({"", "*/*", "application/json"})
_REASONS = {
    200: "200 OK",
    201: "201 Created",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}

StartResponse = Callable[..., Any]
# What a lean call answers: its status and the JSON it renders.
Answer = tuple[int, Any]


class _Declined(Exception):
    """This call is Django's to answer (bad input, an unknown user ...): nothing was written."""


def _record_event(user_id: str, data: Any) -> Answer:
    recorded = user_service.store_event(_checked(lambda: validation.posted_event(data, user_id)))
    return (200 if recorded.duplicate else 201), recorded_detail(recorded)


def _record_events(_: str, data: Any) -> Answer:
    limit = settings.SEGFLOW_MAX_EVENTS_PER_REQUEST
    events = _checked(lambda: validation.event_batch(data, limit))
    return events_answer(user_service.store_events(events))


def _put_user(user_id: str, data: Any) -> Answer:
    attributes = _checked(lambda: validation.user_write(data, user_id))
    user, created = user_service.put_user(user_id, attributes)
    return (201 if created else 200), user_detail(user, just_created=created)


def _patch_user(user_id: str, data: Any) -> Answer:
    patch = _checked(lambda: validation.user_write(data, user_id))
    try:
        user = user_service.patch_user(user_id, patch)
    except user_service.UserNotFound:
        raise _Declined from None
    return 200, user_detail(user)


def _checked(check: Callable[[], Any]) -> Any:
    """What `check` returns; any input it refuses is Django's to answer, with its error."""
    try:
        return check()
    except Exception:
        raise _Declined from None


# (method, path, what answers it, the methods the view allows: its Allow header)
_ROUTES = (
    ("POST", _USER_EVENTS, _record_event, "GET, POST, HEAD, OPTIONS"),
    ("POST", _EVENTS, _record_events, "POST, OPTIONS"),
    ("PUT", _USER, _put_user, "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"),
    ("PATCH", _USER, _patch_user, "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"),
)


class LeanIngest:
    """WSGI middleware: the lean path for the calls apps make most, Django for everything
    else."""

    def __init__(self, application: Callable[[dict, StartResponse], Iterable[bytes]]) -> None:
        self.application = application
        self.renderer = FastJSONRenderer()

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        for route_method, pattern, handler, allow in _ROUTES:
            matched = pattern.fullmatch(path) if method == route_method else None
            if matched is not None:
                answer = self._answer(environ, matched.group(1), handler)
                if answer is not None:
                    status, body, extra = answer
                    headers = [*self._headers(environ, body, allow), *extra]
                    start_response(_REASONS[status], headers)
                    return [body]
                break
        return self.application(environ, start_response)

    def _answer(
        self, environ: dict, user_id: str, handler: Callable[[str, Any], Answer]
    ) -> tuple[int, bytes, list] | None:
        """The status, body and extra headers of the answer, or None to leave the request to
        Django (with its body put back, when it was read)."""
        if not self._plain(environ, user_id):
            return None
        body = self._body(environ)
        if body is None:
            return None
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            data = self._authorized_json(environ, body)
            if data is None:
                return None
            try:
                status, payload = handler(user_id, data)
            except _Declined:
                return None
            except Exception as exc:  # (as ApiErrorsMiddleware answers what a view raises)
                return self._error(exc, environ)
            return status, self.renderer.render(payload), []
        finally:
            signals.request_finished.send(sender=self.__class__)

    def _plain(self, environ: dict, user_id: str) -> bool:
        """Whether nothing about the request asks for more than the lean path does."""
        return (
            not environ.get("QUERY_STRING")
            and user_id.isascii()
            and environ.get("CONTENT_TYPE", "").lower() in _JSON
            and environ.get("HTTP_ACCEPT", "") in _ANY_JSON_ACCEPT
            and environ.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "
            # What Django's own middleware would act on before the view.
            and not settings.SECURE_SSL_REDIRECT
            and not settings.PREPEND_WWW
            and not settings.DISALLOWED_USER_AGENTS
            and not settings.USE_X_FORWARDED_HOST
            and _host_allowed(environ)
        )

    def _body(self, environ: dict) -> bytes | None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= settings.SEGFLOW_MAX_BODY_BYTES:
            return None
        body = environ["wsgi.input"].read(length)
        # Django reads the body again if the request goes on to it.
        environ["wsgi.input"] = io.BytesIO(body)
        return body if len(body) == length else None

    def _authorized_json(self, environ: dict, body: bytes) -> Any | None:
        """The body's JSON, if the call's key may ingest and the body is JSON; else None."""
        key = environ["HTTP_AUTHORIZATION"][7:].strip()
        try:
            api_key = find_api_key(key) if key else None
            if api_key is None or api_key.scope != "ingest":
                return None
            return strict_json(body, "utf-8")
        except Exception:
            # Bad input, or a database that does not answer: Django answers it, as ever.
            return None

    def _error(self, exc: Exception, environ: dict) -> tuple[int, bytes, list]:
        request = SimpleNamespace(
            method=environ.get("REQUEST_METHOD", ""), path=environ.get("PATH_INFO", "")
        )
        what = outage_of(exc)
        if what is not None:
            body, headers = unavailable(what, exc, request)
            return 503, self.renderer.render(body), list(headers.items())
        return 500, self.renderer.render(unexpected(exc, request)), []

    def _headers(self, environ: dict, body: bytes, allow: str) -> list[tuple[str, str]]:
        """What Django, DRF and the middleware put on the view's answer."""
        headers = [
            ("Content-Type", "application/json"),
            ("Allow", allow),
            ("Content-Length", str(len(body))),
        ]
        if settings.X_FRAME_OPTIONS:
            headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS))
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            headers.append(("X-Content-Type-Options", "nosniff"))
        if settings.SECURE_REFERRER_POLICY:
            policy = settings.SECURE_REFERRER_POLICY
            if not isinstance(policy, str):
                policy = ",".join(policy)
            headers.append(("Referrer-Policy", policy))
        if opener_policy := settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            headers.append(("Cross-Origin-Opener-Policy", opener_policy))
        if settings.SECURE_HSTS_SECONDS and _is_secure(environ):
            value = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                value += "; includeSubDomains"
            if settings.SECURE_HSTS_PRELOAD:
                value += "; preload"
            headers.append(("Strict-Transport-Security", value))
        return headers


def _host_allowed(environ: dict) -> bool:
    """Django's check of the Host header (HttpRequest.get_host), which a request that fails it
    gets a 400 from."""
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "")
        port = str(environ.get("SERVER_PORT", ""))
        if port != ("443" if _is_secure(environ) else "80"):
            host = f"{host}:{port}"
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def _is_secure(environ: dict) -> bool:
    """HttpRequest.is_secure: the proxy's header when SECURE_PROXY_SSL_HEADER says which."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"
