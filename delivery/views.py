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
from .unsubscribe import (
    BadToken,
    PreviewLink,
    is_one_click,
    is_unsubscribed,
    read_token,
    unsubscribe,
)

logger = logging.getLogger(__name__)


@csrf_exempt  # mail clients POST here from outside (RFC 8058); the signed token is the proof
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a page with a button and changes nothing (mail scanners open links); POST, from
    that button or from the mail client's one-click unsubscribe, unsubscribes."""
    page = "delivery/unsubscribe.html"
    try:
        wanted = read_token(token)
        if request.method == "GET":
            if is_unsubscribed(wanted.user_id):
                return render(request, page, {"title": "You are unsubscribed"})
            return render(request, page, {"title": "Unsubscribe?", "confirm": True})
        one_click = is_one_click(request.POST)
        method = Unsubscription.Method.ONE_CLICK if one_click else Unsubscription.Method.LINK
        unsubscribe(wanted.user_id, method, wanted.outbox_key)
    except BadToken:
        title = "This unsubscribe link is not valid"
        return render(request, page, {"title": title, "problem": "token"}, status=400)
    except UserNotFound:
        title = "There is nobody to unsubscribe"
        return render(request, page, {"title": title, "problem": "user"}, status=404)
    except PreviewLink:
        title = "This link is from a preview"
        return render(request, page, {"title": title, "problem": "preview"})
    return render(request, page, {"title": "You are unsubscribed"})


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
