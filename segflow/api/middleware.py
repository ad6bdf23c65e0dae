"""Under /api/ every answer is JSON, whatever breaks and wherever.

DRF's exception handler (`segflow.api.errors.exception_handler`) sees only what is raised inside
an API view, authentication included. This middleware, first in MIDDLEWARE, covers the rest:
errors in plain views under /api/ (`process_exception`) and in other middleware, which Django
turns into its HTML error page before the outer middleware sees them; that page is replaced by
JSON here, built from the exception Django reported (`got_request_exception`). An outage of the
database or the broker is a 503 with Retry-After; anything else a 500 with an error id that is in
the log.
"""

from __future__ import annotations

import sys

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.signals import got_request_exception
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware

from .errors import outage_of, unavailable, unexpected

API_PREFIX = "/api/"
# The paths of API calls, authenticated by key: the admin's middleware has nothing to do there.
KEYED_PREFIXES = (API_PREFIX, "/v1/")


def is_api(request) -> bool:
    return request.path_info.startswith(API_PREFIX)


def is_keyed(request) -> bool:
    return request.path_info.startswith(KEYED_PREFIXES)


def json_error(exc: BaseException | None, request) -> JsonResponse:
    what = outage_of(exc) if exc is not None else None
    if what is not None:
        body, headers = unavailable(what, exc, request)
        return JsonResponse(body, status=503, headers=headers)
    return JsonResponse(unexpected(exc, request), status=500)


def _remember(sender, request=None, **kwargs) -> None:
    """Keep the exception Django is about to answer with its error page, for the middleware."""
    if request is not None:
        request._segflow_exception = sys.exc_info()[1]


got_request_exception.connect(_remember, dispatch_uid="segflow.api.middleware")


class ApiErrorsMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code >= 500
            and is_api(request)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            response = json_error(getattr(request, "_segflow_exception", None), request)
        return response

    def process_exception(self, request, exception):
        if not is_api(request):
            return None
        response = json_error(exception, request)
        if response.status_code == 500:
            # As Django does for the errors it answers itself: the test client re-raises it, so
            # a failing test shows the traceback.
            got_request_exception.send(sender=type(self), request=request)
        return response


def _not_for_api_calls(middleware: type) -> type:
    """`middleware` as it is, except that it does nothing for requests under /api/ and /v1/.

    Sessions, CSRF, the logged-in staff user and messages are the admin's: an API call carries
    a key, and reading a session, a CSRF cookie or a user for it is wasted work. A subclass, so
    that Django's checks (the admin's, that its middleware is installed) still recognise it.
    """

    class Skipped(middleware):
        def __call__(self, request):
            if is_keyed(request):
                return self.get_response(request)
            return super().__call__(request)

        if hasattr(middleware, "process_view"):

            def process_view(self, request, view_func, view_args, view_kwargs):
                if is_keyed(request):
                    return None
                return super().process_view(request, view_func, view_args, view_kwargs)

    Skipped.__name__ = Skipped.__qualname__ = f"AdminOnly{middleware.__name__}"
    Skipped.__doc__ = f"{middleware.__name__}, for everything but API calls (/api/, /v1/)."
    return Skipped


AdminOnlySessionMiddleware = _not_for_api_calls(SessionMiddleware)
AdminOnlyCsrfViewMiddleware = _not_for_api_calls(CsrfViewMiddleware)
AdminOnlyAuthenticationMiddleware = _not_for_api_calls(AuthenticationMiddleware)
AdminOnlyMessageMiddleware = _not_for_api_calls(MessageMiddleware)
