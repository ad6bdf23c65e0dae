import logging
import math

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from segflow import users as user_service
from segflow.dispatch import broker_problem

from . import openapi, validation
from .errors import InvalidInput, error_response
from .selectors import (
    event_detail,
    events_answer,
    events_of,
    find_user,
    recorded_detail,
    user_detail,
)


@openapi.user_view
class UserView(APIView):
    """/api/users/{id}: read, create or replace (PUT), merge (PATCH), delete."""

    def get(self, request, user_id: str):
        user = find_user(user_id)
        if user is None:
            return _user_not_found(user_id)
        return Response(user_detail(user))

    def put(self, request, user_id: str):
        attributes = validation.user_write(request.data, user_id)
        user, created = user_service.put_user(user_id, attributes)
        return Response(
            user_detail(user, just_created=created),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    def patch(self, request, user_id: str):
        patch = validation.user_write(request.data, user_id)
        try:
            user = user_service.patch_user(user_id, patch)
        except user_service.UserNotFound:
            return _user_not_found(user_id, hint=" (create the user with PUT first)")
        return Response(user_detail(user))

    def delete(self, request, user_id: str):
        if not user_service.delete_user(user_id):
            return _user_not_found(user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EventPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        for name in (self.page_query_param, self.page_size_query_param):
            value = request.query_params.get(name)
            # ASCII digits only: "²".isdigit() is True, and int() refuses it (or reads "٣" as 3).
            if value is not None and not (value.isascii() and value.isdigit() and int(value) >= 1):
                raise InvalidInput(name, f"must be a whole number of 1 or more, got {value!r}")
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound:
            raise InvalidInput(self.page_query_param, "there is no page with this number") from None


@openapi.user_events_view
class UserEventsView(APIView):
    """/api/users/{id}/events: record an event (POST), list them newest first (GET)."""

    def get(self, request, user_id: str):
        if find_user(user_id) is None:
            return _user_not_found(user_id)
        events = events_of(user_id)
        paginator = EventPagination()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response([event_detail(e) for e in page])

    def post(self, request, user_id: str):
        recorded = user_service.store_event(validation.posted_event(request.data, user_id))
        return Response(
            recorded_detail(recorded),
            status=status.HTTP_200_OK if recorded.duplicate else status.HTTP_201_CREATED,
        )


@openapi.events_view
class EventsView(APIView):
    """/api/events: record a batch of events for any users (POST), all of them or none."""

    def post(self, request):
        events = validation.event_batch(request.data, settings.SEGFLOW_MAX_EVENTS_PER_REQUEST)
        answer_status, body = events_answer(user_service.store_events(events))
        return Response(body, status=answer_status)


ENDPOINTS = {
    "GET /api/": "this list",
    "GET /api/health": "liveness: the web process answers",
    "GET /api/ready": "readiness: the database (and the broker, with Celery) answer",
    "GET, PUT, PATCH, DELETE /api/users/{id}": "read, create or replace, merge, delete a user",
    "GET, POST /api/users/{id}/events": "list a user's events (newest first), record one",
    "POST /api/events": "record up to SEGFLOW_MAX_EVENTS_PER_REQUEST events for any users",
    "POST /api/push, POST /api/push/rollback": "push a config from CI (a key of the scope push)",
    "POST /v1/identify, track, page, screen, group, alias, batch": "the Segment tracking spec",
    "GET /api/schema/": "the OpenAPI schema of these endpoints (no key needed)",
    "GET /api/docs/": "the endpoints in Swagger UI, on that schema (no key needed)",
}
ENDPOINTS_HINT = "endpoints are " + ", ".join(ENDPOINTS)


@openapi.index_view
class IndexView(APIView):
    """/api/: what the API offers. A client may GET it to check its key."""

    def get(self, request):
        return Response({"endpoints": ENDPOINTS})


@openapi.not_an_endpoint
class EmptyIdView(APIView):
    """A path with no user id in it: say so, and where the endpoints are, instead of a 404."""

    def get(self, request, *args, **kwargs):
        raise InvalidInput("id", f"must not be empty ({ENDPOINTS_HINT})")

    put = patch = delete = post = get


logger = logging.getLogger("segflow.api")


@openapi.health_view
class HealthView(APIView):
    """Liveness: the process answers. Touches neither the database nor the broker."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        return Response({"status": "ok"})


@openapi.ready_view
class ReadyView(APIView):
    """Readiness: the database answers a `SELECT 1`, and in production mode the broker answers,
    each within SEGFLOW_READY_TIMEOUT_SECONDS; else a 503 naming what is down."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        timeout = settings.SEGFLOW_READY_TIMEOUT_SECONDS
        problems = {"database": _database_problem(timeout)}
        if not settings.SEGFLOW_TASKS_INLINE:
            problems["broker"] = broker_problem(timeout)
        checks = {name: "down" if problem else "ok" for name, problem in problems.items()}
        down = [name for name, problem in problems.items() if problem]
        if not down:
            return Response({"status": "ready", "checks": checks})
        for name in down:
            logger.warning("not ready: the %s does not answer (%s)", name, problems[name])
        seconds = settings.SEGFLOW_RETRY_AFTER_SECONDS
        return Response(
            {
                "status": "not ready",
                "error": "; ".join(f"{name}: does not answer" for name in down),
                "checks": checks,
            },
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(seconds)},
        )


def _database_problem(timeout: float) -> str | None:
    """None if the database answers `SELECT 1` within `timeout` seconds, else what went wrong.

    Asked over a connection of its own with short timeouts, so a database that hangs is noticed
    even where the request's own connection would wait for it."""
    wrapper = connections[DEFAULT_DB_ALIAS].copy()
    options = wrapper.settings_dict.setdefault("OPTIONS", {})
    if wrapper.vendor == "mysql":
        seconds = max(1, math.ceil(timeout))
        options.update(connect_timeout=seconds, read_timeout=seconds, write_timeout=seconds)
    elif wrapper.vendor == "sqlite":
        options["timeout"] = timeout
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            wrapper.close()
        except Exception:
            pass
    return None


@csrf_exempt
def no_such_endpoint(request, *args, **kwargs):
    return JsonResponse(
        {
            "error": f"path: no API endpoint at {request.path} (user ids cannot contain '/'; "
            f"{ENDPOINTS_HINT})",
            "endpoints": ENDPOINTS,
        },
        status=404,
    )


def _user_not_found(user_id: str, hint: str = "") -> Response:
    shown = user_id if len(user_id) <= 80 else user_id[:80] + "…"
    return error_response(f"id: no user with id {shown!r}{hint}", status.HTTP_404_NOT_FOUND)
