"""The unsubscribe page and the providers' tracking webhooks. Thin: each calls one service."""

from __future__ import annotations

import json
import logging

from anymail.exceptions import AnymailConfigurationError, AnymailError
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from segflow.users import UserNotFound

from . import sns
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


class BadPayload(ValueError):
    """A body that is JSON, but not the provider's webhook payload."""


def _parsed(view, parse, request) -> list:
    """anymail's parsing of a body, with a body of the wrong shape refused (a 400, not a 500)."""
    try:
        events = parse(request)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise BadPayload(
            f"body: not a {view.esp_name} webhook payload ({type(exc).__name__}: {exc})"
        ) from exc
    for event in events:
        for name in ("recipient", "message_id", "description", "mta_response", "click_url"):
            value = getattr(event, name, None)
            if value is not None and not isinstance(value, str):
                raise BadPayload(f"body: the event's {name} is not a string: {value!r}")
        if event.metadata is not None and not isinstance(event.metadata, dict):
            raise BadPayload("body: the event's metadata is not an object")
    return events


# The field that names the recipient in each kind of Postmark tracking record.
POSTMARK_RECIPIENT_FIELD = {
    "Delivery": "Recipient",
    "Bounce": "Email",
    "SpamComplaint": "Email",
    "Open": "Recipient",
    "Click": "Recipient",
    "SubscriptionChange": "Recipient",
}


def _check_postmark_body(body) -> None:
    """The fields segflow reads must be there, as strings (anymail would default or crash)."""
    if not isinstance(body, dict):
        raise BadPayload("body: not a Postmark webhook payload (a JSON object)")
    kind = body.get("RecordType")
    if not isinstance(kind, str):
        raise BadPayload("body: RecordType: missing, or not a string")
    required = ["MessageID"]
    if kind in POSTMARK_RECIPIENT_FIELD:
        required.append(POSTMARK_RECIPIENT_FIELD[kind])
    if kind in ("Bounce", "SpamComplaint"):
        required.append("Type")
    for name in required:
        if not isinstance(body.get(name), str):
            raise BadPayload(f"body: {name}: missing, or not a string (RecordType {kind})")


class PostmarkTracking(PostmarkTrackingWebhookView):
    def parse_events(self, request):
        _check_postmark_body(json.loads(request.body.decode("utf-8")))
        return _parsed(self, super().parse_events, request)


def _amazon_ses_tracking_view():
    # Imported on the first SES webhook: anymail's SES module imports boto3, about 25 MB in
    # every process, and most deployments never receive one.
    from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView

    class AmazonSESTracking(AmazonSESTrackingWebhookView):
        """anymail's SES webhook, believing only what Amazon SNS signed (delivery.sns)."""

        def run_validators(self, request):
            message = self._parse_sns_message(request)
            if not isinstance(message, dict):
                raise BadPayload("body: not an SNS message (a JSON object)")
            super().run_validators(request)  # the shared secret; SNS's headers match the body
            sns.verify(message)

        def parse_events(self, request):
            return _parsed(self, super().parse_events, request)

    return AmazonSESTracking.as_view()


def _webhook(make_view):
    """anymail's webhook view (made on first use), refused while no shared secret is set, with
    400 for bad bodies."""
    made: list = []

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
        if not made:
            made.append(make_view())
        try:
            return made[0](request, *args, **kwargs)
        except (AnymailError, AnymailConfigurationError, ValueError) as exc:
            # A wrong secret, a body that is not the provider's JSON, a webhook of the wrong
            # kind, a message Amazon did not sign: the sender gets told, and nothing was
            # changed. (Our own failures are 500s, which the providers retry.)
            logger.warning("webhook %s refused: %s", request.path, exc)
            return JsonResponse({"error": str(exc)}, status=400)
        except sns.CertificateUnavailable as exc:
            # SNS retries a 5xx later; the certificate may be reachable by then.
            logger.error("webhook %s: %s", request.path, exc)
            response = JsonResponse({"error": f"try again later: {exc}"}, status=503)
            response["Retry-After"] = "60"
            return response

    return guarded


postmark_tracking = _webhook(PostmarkTracking.as_view)
amazon_ses_tracking = _webhook(_amazon_ses_tracking_view)
