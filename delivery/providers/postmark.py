"""Postmark, through anymail's Postmark backend.

The server token comes from the environment (POSTMARK_SERVER_TOKEN, read in
settings/email.py); `api_key` in the config still works, as in the original Segflow, but keeps a
secret in a file in Git. Campaign emails may go through a broadcast message stream, as Postmark
asks of bulk email; everything else through `message_stream` (Postmark's default: "outbound").
"""

from __future__ import annotations

from typing import Any

import requests
from anymail.backends.postmark import EmailBackend as AnymailPostmarkBackend
from django.core.mail import EmailMessage

from .base import EmailProvider


class PostmarkBackend(AnymailPostmarkBackend):
    """anymail's Postmark backend, reading the environment's proxy and CA settings once per
    connection instead of once per message: requests does that on every request of a session
    that trusts the environment, and it cost about a third of a send's CPU time in a profile
    (bench/README.md). The settings themselves still apply, for the API's URL."""

    def create_session(self) -> requests.Session:
        session = super().create_session()
        if session.trust_env:
            found = session.merge_environment_settings(self.api_url, {}, None, None, None)
            session.proxies.update(found["proxies"])
            session.verify = found["verify"]
            session.trust_env = False
        return session


class PostmarkProvider(EmailProvider):
    # Failures need nothing of their own: anymail turns Postmark's 406 "inactive recipient" (and
    # a 200 that names the recipient inactive) into AnymailRecipientsRefused, which the common
    # rules treat as permanent and suppress; 5xx and 429 are retried, other 4xx are not.
    name = "postmark"
    esp_name = "Postmark"
    backend = "delivery.providers.postmark.PostmarkBackend"
    options = {
        "api_key": "the server token (better: POSTMARK_SERVER_TOKEN in the environment)",
        "server_token": "the server token (better: POSTMARK_SERVER_TOKEN in the environment)",
        "message_stream": "the message stream of every email (Postmark's default: outbound)",
        "broadcast_message_stream": "the message stream of campaign emails",
    }
    secret_options = frozenset({"api_key", "server_token"})

    def connection_kwargs(self, settings: dict[str, Any]) -> dict[str, Any]:
        token = settings.get("server_token") or settings.get("api_key")
        return {"server_token": token} if token else {}

    def prepare(self, message: EmailMessage, settings: dict[str, Any], *, campaign: bool) -> None:
        stream = settings.get("message_stream")
        if campaign:
            stream = settings.get("broadcast_message_stream") or stream
        if stream:
            extra = getattr(message, "esp_extra", None)
            message.esp_extra = {
                **(extra if isinstance(extra, dict) else {}),
                "MessageStream": stream,
            }

    def bounce_is_permanent(self, esp_event: dict[str, Any]) -> bool:
        # Postmark deactivates an address after a hard bounce or a complaint, and says so.
        return (
            esp_event.get("Inactive") is True
            or esp_event.get("Type") == "HardBounce"
            or esp_event.get("SuppressionReason") in ("HardBounce", "SpamComplaint")
        )
