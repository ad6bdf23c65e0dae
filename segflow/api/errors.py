"""Every API error is JSON: {"error": "<field>: <problem>", "fields": {...}} for bad input (4xx);
a 503 with Retry-After when the database or the broker is down; a 500 with an error id that is in
the log for anything unexpected. `segflow.api.middleware` applies the last two to errors that
happen outside DRF's views too."""

import logging
import traceback
import uuid

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import status
from rest_framework.exceptions import (
    APIException,
    MethodNotAllowed,
    NotAuthenticated,
    UnsupportedMediaType,
    ValidationError,
)
from rest_framework.response import Response


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE

    def __init__(self) -> None:
        from django.conf import settings

        limit = settings.SEGFLOW_MAX_BODY_BYTES
        super().__init__(f"body: larger than the limit of {limit} bytes")


class InvalidInput(ValidationError):
    """A 400 that names the field: InvalidInput("attributes", "must be a JSON object")."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__({field: [problem]})


logger = logging.getLogger("segflow.api")

# What an outage raises: the database's connection errors (refused, lost, gone away, a lock
# wait given up) and the broker's.
DATABASE_OUTAGES = (DatabaseOperationalError, InterfaceError)
BROKER_OUTAGES = (BrokerOperationalError, RedisConnectionError, RedisTimeoutError)


def outage_of(exc: BaseException) -> str | None:
    """'database' or 'broker' if `exc` says that one is not available, else None."""
    if isinstance(exc, DATABASE_OUTAGES):
        return "database"
    if isinstance(exc, BROKER_OUTAGES):
        return "broker"
    return None


def unavailable(what: str, exc: BaseException | None, request) -> tuple[dict, dict]:
    """The body and headers of a 503 for an outage of `what`; logged without the traceback (an
    outage makes many of them), with the error's text, which the caller does not get."""
    logger.warning(
        "503 for %s %s: the %s is not available (%s: %s, in %s)",
        getattr(request, "method", ""),
        getattr(request, "path", ""),
        what,
        type(exc).__name__,
        exc,
        _where(exc),
    )
    seconds = settings.SEGFLOW_RETRY_AFTER_SECONDS
    body = {"error": f"{what}: not available right now; try again in {seconds} seconds"}
    return body, {"Retry-After": str(seconds)}


def _where(exc: BaseException | None) -> str:
    """The innermost place in segflow's own code that the error passed through."""
    root = str(settings.BASE_DIR)
    frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
    ours = [f for f in frames if f.filename.startswith(root) and "site-packages" not in f.filename]
    if not ours:
        return "?"
    frame = ours[-1]
    return f"{frame.filename[len(root) + 1 :]}:{frame.lineno} {frame.name}"


def unexpected(exc: BaseException | None, request) -> dict:
    """The body of a 500 for an error nobody expected; logged with its traceback under an id
    that the caller gets, so the two can be matched."""
    error_id = uuid.uuid4().hex[:16]
    logger.error(
        "500 for %s %s: unexpected error, id %s",
        getattr(request, "method", ""),
        getattr(request, "path", ""),
        error_id,
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
    )
    return {
        "error": f"server: an unexpected error, logged under the id {error_id}; "
        "this is a bug in segflow",
        "error_id": error_id,
    }


def exception_handler(exc, context):
    what = outage_of(exc)
    if what is not None:
        body, headers = unavailable(what, exc, context.get("request"))
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers)
    if isinstance(exc, RequestDataTooBig):  # over DATA_UPLOAD_MAX_MEMORY_SIZE: Django's check
        exc = PayloadTooLarge()
    # (Imported here: rest_framework.views loads the API's parsers, which import this module.)
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, ValidationError) and isinstance(detail, dict):
        fields = {
            k: [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in detail.items()
        }
        message = "; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items())
        response.data = {"error": message, "fields": fields}
    else:
        text = str(detail.get("detail", detail) if isinstance(detail, dict) else detail)
        response.data = {"error": _name_the_field(exc, text, context)}
    return response


def _name_the_field(exc, text: str, context) -> str:
    """DRF's own messages, rewritten to name what the caller should fix."""
    request = context.get("request")
    if isinstance(exc, NotAuthenticated):
        return "Authorization: missing; send the header 'Authorization: Bearer <api key>'"
    if isinstance(exc, MethodNotAllowed):
        allowed = context["view"].allowed_methods if context.get("view") else []
        return f"method: {request.method if request else ''} is not allowed here; use " + ", ".join(
            m for m in allowed if m != "OPTIONS"
        )
    if isinstance(exc, UnsupportedMediaType):
        sent = request.content_type if request else ""
        return f"Content-Type: {sent!r} is not accepted; send application/json"
    return text


def error_response(message: str, http_status: int) -> Response:
    return Response({"error": message}, status=http_status)
