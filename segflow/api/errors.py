"""Every API error is JSON with a 4xx status: {"error": "<field>: <problem>", "fields": {...}}."""

from django.core.exceptions import RequestDataTooBig
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


def exception_handler(exc, context):
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
