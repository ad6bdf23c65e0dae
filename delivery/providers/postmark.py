"""Postmark, through anymail's Postmark backend.

The server token comes from the environment (POSTMARK_SERVER_TOKEN, read in
settings/email.py); `api_key` in the config still works, as in the original Segflow, but keeps a
secret in a file in Git. Campaign emails may go through a broadcast message stream, as Postmark
asks of bulk email; everything else through `message_stream` (Postmark's default: "outbound").

A set of several emails goes out in one call to Postmark's batch endpoint (`/email/batch`, up to
500 messages), each message built by anymail as for a single send; Postmark answers each one
in order, with its message id or its own error code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import requests
from anymail.backends.postmark import EmailBackend as AnymailPostmarkBackend
from anymail.backends.postmark import PostmarkPayload
from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRequestsAPIError
from anymail.utils import EmailAddress, parse_address_list
from django.core.mail import EmailMessage

from .base import EmailProvider, Failure, classify_common, describe_exception

# Postmark's per-message error code for an address it will not deliver to (a hard bounce or a
# spam complaint before), and the words of a 200 that names such addresses.
INACTIVE_RECIPIENT = 406
_INACTIVE_NAMED = re.compile(r"inactive addresses:\s*(.*?)\.\s*Inactive recipients", re.S)


class PostmarkRefused(AnymailAPIError):
    """Postmark refused one message of a batch, with its own error code."""

    def __init__(self, code: int, text: str, **kwargs: Any) -> None:
        super().__init__(f"Postmark refused the message (ErrorCode {code}): {text}", **kwargs)
        self.code = code


class UnreadableBatchAnswer(AnymailAPIError):
    """Postmark answered a batch with a success that does not say what became of each message:
    it may have sent them."""


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

    def build_message_payload(self, message: EmailMessage, defaults: dict) -> PostmarkPayload:
        return _Payload(message, defaults, self)

    def send_batch(self, messages: list[EmailMessage]) -> list[str | Exception]:
        """See EmailProvider.send_batch; the call goes through anymail's `post_to_esp`, so a
        failed call raises the same errors as a single send."""
        results: list[str | Exception | None] = [None] * len(messages)
        built = []
        for n, message in enumerate(messages):
            try:
                built.append((n, self.build_message_payload(message, self.send_defaults)))
            except AnymailError as exc:  # (an address or feature anymail refuses)
                results[n] = exc
        if built:
            batch = _BatchPayload([payload for _, payload in built], self)
            first = messages[built[0][0]]
            response = self.post_to_esp(batch, first)
            if response.status_code == 422:  # (the call's own error, not a message's)
                raise AnymailRequestsAPIError(
                    email_message=first, payload=batch, response=response, backend=self
                )
            try:
                answers = response.json()
            except ValueError:
                answers = None
            if not isinstance(answers, list) or len(answers) != len(built):
                raise UnreadableBatchAnswer(
                    f"Postmark's answer to a batch of {len(built)} is not one result a message",
                    email_message=first,
                    payload=batch,
                    response=response,
                    backend=self,
                )
            for (n, _), answer in zip(built, answers, strict=True):
                results[n] = _result_of(answer)
        return [result for result in results if result is not None]


class PostmarkProvider(EmailProvider):
    # A single send's failures need nothing of their own: anymail turns Postmark's 406 "inactive
    # recipient" (and a 200 that names the recipient inactive) into AnymailRecipientsRefused,
    # which the common rules treat as permanent and suppress; 5xx and 429 are retried, other 4xx
    # are not. A batch's per-message answers are classified alike in `classify`.
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
    batch_limit = 500  # Postmark's limit for /email/batch

    def send_batch(self, backend, messages: list[EmailMessage]) -> list[str | Exception]:
        return backend.send_batch(messages)

    def classify(self, exc: Exception) -> Failure:
        if isinstance(exc, UnreadableBatchAnswer):
            return Failure("unknown", describe_exception(exc))
        if isinstance(exc, PostmarkRefused):
            inactive = exc.code == INACTIVE_RECIPIENT
            return Failure("permanent", describe_exception(exc), suppress_address=inactive)
        return classify_common(exc)

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


@lru_cache(maxsize=64)
def _parsed_once(addresses: tuple[str, ...], field: str) -> tuple[EmailAddress, ...]:
    return tuple(parse_address_list(list(addresses), field=field))


def _sender_parsed_once(field: str) -> Callable[[Any], list[EmailAddress]]:
    """anymail's parsing of `field`'s addresses, remembered: a config sends every email from the
    same address. anymail's address parsing was 6% of a campaign worker's profile, half of it
    this one address, parsed again for every email."""

    def parse(value: Any) -> list[EmailAddress]:
        listed = [value] if isinstance(value, str) else value
        if isinstance(listed, list | tuple) and all(type(a) is str for a in listed):
            return list(_parsed_once(tuple(listed), field))
        return parse_address_list(value, field=field)  # (lazy strings and the like)

    return parse


class _Payload(PostmarkPayload):
    """anymail's Postmark payload, with the sender's and reply-to addresses parsed once."""

    base_message_attrs = tuple(
        (attr, combiner, _sender_parsed_once(attr) if attr in ("from_email", "reply_to") else to)
        for attr, combiner, to in PostmarkPayload.base_message_attrs
    )


class _BatchPayload:
    """What anymail's `post_to_esp` needs of a payload, for a call to /email/batch."""

    def __init__(self, payloads: list, backend: PostmarkBackend) -> None:
        self.payloads = payloads
        self.backend = backend

    def get_request_params(self, api_url: str) -> dict[str, Any]:
        return {
            "method": "POST",
            "url": f"{api_url}email/batch",
            "headers": {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-Postmark-Server-Token": self.payloads[0].server_token,
            },
            "data": self.payloads[0].serialize_json([p.data for p in self.payloads]),
        }


def _result_of(answer: Any) -> str | Exception:
    """A message id, or the error, from Postmark's answer for one message of a batch."""
    if not isinstance(answer, dict):
        return UnreadableBatchAnswer(f"not an answer for a message: {answer!r}")
    code, text = answer.get("ErrorCode", 0), str(answer.get("Message", ""))
    if code == 0 and not _INACTIVE_NAMED.search(text):
        message_id = answer.get("MessageID")
        if not message_id:
            return UnreadableBatchAnswer(f"a success without a MessageID: {answer!r}")
        return str(message_id)
    if code == 0:  # (a 200 that names the address inactive: not sent)
        code = INACTIVE_RECIPIENT
    return PostmarkRefused(code if isinstance(code, int) else -1, text)
