"""The unsubscribe page and the providers' tracking webhooks. Thin: each calls one service."""

from __future__ import annotations

import logging

from anymail.exceptions import AnymailConfigurationError, AnymailError
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from segflow.users import UserNotFound

from .models import Unsubscription
from .unsubscribe import BadToken, read_token, unsubscribe

logger = logging.getLogger(__name__)


@csrf_exempt  # mail clients POST here from outside (RFC 8058); the signed token is the proof
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        wanted = read_token(token)
    except BadToken:
        return render(
            request,
            "delivery/unsubscribe.html",
            {"title": "This unsubscribe link is not valid", "problem": "token"},
            status=400,
        )
    method = Unsubscription.Method.ONE_CLICK if request.method == "POST" else "link"
    try:
        unsubscribe(wanted.user_id, method, wanted.outbox_key)
    except UserNotFound:
        return render(
            request,
            "delivery/unsubscribe.html",
            {"title": "There is nobody to unsubscribe", "problem": "user"},
            status=404,
        )
    return render(request, "delivery/unsubscribe.html", {"title": "You are unsubscribed"})


def _webhook(view_class):
    """anymail's webhook view, refused while no shared secret is set, with 400 for bad bodies."""
    view = view_class.as_view()

    @csrf_exempt
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not settings.SEGFLOW_WEBHOOK_SECRET:
            return JsonResponse(
                {
                    "error": "webhooks are turned off: set SEGFLOW_WEBHOOK_SECRET in the "
                    "environment and put it in the webhook URL as basic auth"
                },
                status=403,
            )
        try:
            return view(request, *args, **kwargs)
        except (AnymailError, AnymailConfigurationError, ValueError) as exc:
            # A wrong secret, a body that is not the provider's JSON, a webhook of the wrong
            # kind: the sender gets told, and nothing was changed. (Our own failures are 500s,
            # which the providers retry.)
            logger.warning("webhook %s refused: %s", request.path, exc)
            return JsonResponse({"error": str(exc)}, status=400)

    return guarded


postmark_tracking = _webhook(PostmarkTrackingWebhookView)
amazon_ses_tracking = _webhook(AmazonSESTrackingWebhookView)
