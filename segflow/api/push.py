"""POST /api/push and POST /api/push/rollback: a config pushed from CI to the running server.

A push runs the team's Python on every worker, so it takes a key of the scope `push`, the server
must allow remote pushes (SEGFLOW_ALLOW_REMOTE_PUSH), and the bundle has a size limit
(SEGFLOW_PUSH_MAX_BYTES). Every attempt is audited, refused ones too (`PushAttempt`). The push
itself is `segflow.push.push_bundle`, validated and planned exactly as a local push.
"""

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, NotAuthenticated, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from segflow.config import ConfigError, bundle_from_payload
from segflow.push import (
    Actor,
    PushError,
    failure_message,
    push_bundle,
    record_attempt,
    rollback,
)

from . import openapi
from .errors import InvalidInput
from .parsers import StrictJSONParser
from .permissions import scope_refusal


class BundleTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE

    def __init__(self) -> None:
        super().__init__(
            f"body: larger than the limit of {settings.SEGFLOW_PUSH_MAX_BODY_BYTES} bytes for a "
            f"push (a bundle of at most SEGFLOW_PUSH_MAX_BYTES={settings.SEGFLOW_PUSH_MAX_BYTES})"
        )


class PushBodyParser(StrictJSONParser):
    """A push's JSON body, which carries the config's files: its own, larger, limit."""

    def max_bytes(self) -> int:
        return settings.SEGFLOW_PUSH_MAX_BODY_BYTES

    def too_large(self) -> Exception:
        return BundleTooLarge()


class _PushEndpoint(APIView):
    parser_classes = [PushBodyParser]
    permission_classes: list = []  # checked in `initial`, where a refusal is audited
    action = "push"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authenticates the key
        if request.auth is None:
            raise NotAuthenticated()
        if not settings.SEGFLOW_ALLOW_REMOTE_PUSH:
            raise PermissionDenied(
                "push: remote pushes are turned off on this server; set "
                "SEGFLOW_ALLOW_REMOTE_PUSH=1 in its environment to accept them"
            )
        scope = getattr(request.auth, "scope", None)
        if scope != "push":
            raise PermissionDenied(scope_refusal(scope, "push"))

    def actor(self) -> Actor:
        request = self.request
        key = getattr(request, "_auth", None) if request is not None else None
        meta = request.META if request is not None else {}
        return Actor(
            name=f"key {key.name}" if key is not None else "no valid key",
            via="http",
            api_key_id=getattr(key, "pk", None),
            client_ip=meta.get("REMOTE_ADDR", ""),
            forwarded_for=meta.get("HTTP_X_FORWARDED_FOR", ""),
        )

    def handle_exception(self, exc):
        # Refused before the push ran (no key, not allowed, too large, malformed): audited here.
        if self.request is not None and self.request.method == "POST":
            record_attempt(
                self.actor(),
                action=self.action,
                dry_run=False,
                result="refused",
                message=_text(exc),
            )
        return super().handle_exception(exc)

    def answer(self, work) -> Response:
        try:
            plan = work()
        except (ConfigError, PushError) as exc:  # audited by the push as failed
            return Response({"error": failure_message(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(plan.as_json())


@openapi.push_view
class PushView(_PushEndpoint):
    """POST /api/push {"bundle": <segflow.client.collect_bundle>, "dry_run": false}"""

    def post(self, request):
        body = _body(request.data, {"bundle", "dry_run"}, required={"bundle"})
        dry_run = _flag(body, "dry_run")
        try:
            bundle = bundle_from_payload(body["bundle"])
        except ConfigError as exc:
            record_attempt(
                self.actor(),
                action="push",
                dry_run=dry_run,
                result="refused",
                message=str(exc),
                location=str(body["bundle"].get("location", ""))
                if isinstance(body["bundle"], dict)
                else "",
            )
            return Response({"error": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return self.answer(lambda: push_bundle(bundle, dry_run=dry_run, actor=self.actor()))


@openapi.rollback_view
class RollbackView(_PushEndpoint):
    """POST /api/push/rollback {"to": N or null, "dry_run": false}"""

    action = "rollback"

    def post(self, request):
        body = _body(request.data, {"to", "dry_run"})
        dry_run = _flag(body, "dry_run")
        to = body.get("to")
        if to is not None and (isinstance(to, bool) or not isinstance(to, int) or to < 1):
            raise InvalidInput("to", f"must be a version number (1 or more) or null, got {to!r}")
        return self.answer(lambda: rollback(to, dry_run=dry_run, actor=self.actor()))


def _body(data, allowed: set[str], required: frozenset | set = frozenset()) -> dict:
    if not isinstance(data, dict):
        raise InvalidInput("body", "must be a JSON object")
    unknown = set(data) - allowed
    if unknown:
        raise InvalidInput(
            next(iter(sorted(unknown))), f"unknown field; expected {', '.join(sorted(allowed))}"
        )
    for name in sorted(required - set(data)):
        raise InvalidInput(name, "this field is required")
    return data


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(name, f"must be true or false, got {value!r}")
    return value


def _text(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {v}" for k, v in detail.items())
    return str(detail if detail is not None else exc)
