"""The interface every email provider module implements, and what they share.

A provider module says which Django email backend delivers (an anymail backend, or Django's own),
which keys its `email_provider.config` takes, how a message is dressed for it (a message stream,
a configuration set), and, for a failed send, whether trying again can help.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import requests
import urllib3
from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend

from segflow.config import ConfigError

logger = logging.getLogger(__name__)

FailureKind = Literal["transient", "permanent", "unknown"]


@dataclass(frozen=True)
class Failure:
    """What a failed send means.

    - `transient`: the provider did not take the email and may later (a 5xx, a rate limit, no
      connection): try again after a backoff.
    - `permanent`: it never will (an inactive or invalid recipient, a refused sender): do not.
    - `unknown`: the request may have reached the provider, but its answer did not come back
      (a read timeout): it may have been sent, so it is never sent again automatically.
    """

    kind: FailureKind
    reason: str
    # The provider asked to wait this long (a Retry-After header), in seconds.
    retry_after: float | None = None
    # The provider will never deliver to this address (it bounced or complained before).
    suppress_address: bool = False


class EmailProvider:
    """One email provider: subclass per provider module, registered in delivery.providers."""

    name: ClassVar[str]
    # What anymail calls it in the events of its tracking webhooks.
    esp_name: ClassVar[str] = ""
    # Dotted path of the Django email backend; None means settings.EMAIL_BACKEND.
    backend: ClassVar[str | None] = None
    # The keys `email_provider.config` may have besides `name`, and what each one is.
    options: ClassVar[dict[str, str]] = {}
    # Those of `options` that are secrets: never shown in a push plan nor stored.
    secret_options: ClassVar[frozenset[str]] = frozenset()
    # How many emails one call to the provider may carry (see send_batch); 1: one a call.
    batch_limit: ClassVar[int] = 1

    def check_settings(self, settings: dict[str, Any], path: str) -> None:
        """Raise ConfigError naming the key if `settings` has a key or value this one refuses."""
        for key, value in settings.items():
            if key not in self.options:
                expected = ", ".join(sorted(self.options)) or "nothing besides name"
                raise ConfigError(
                    f"{path}.{key}: not a setting of {self.name!r}; expected {expected}"
                )
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{path}.{key}: must be a non-empty string, got {value!r}")

    def describe(self, settings: dict[str, Any]) -> dict[str, str]:
        """The settings a push may show and store: all but the secrets."""
        return {k: v for k, v in sorted(settings.items()) if k not in self.secret_options}

    def connection_kwargs(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the backend, from the config's settings."""
        return {}

    def connection(self, settings: dict[str, Any]) -> BaseEmailBackend:
        if self.backend is None:
            return get_connection()
        return get_connection(self.backend, **self.connection_kwargs(settings))

    def keeps_connection(self, backend: BaseEmailBackend) -> bool:
        """Whether one open `backend` may carry the next message of a batch too."""
        return True

    def prepare(self, message: EmailMessage, settings: dict[str, Any], *, campaign: bool) -> None:
        """Dress `message` for this provider (streams, configuration sets). Nothing by default."""

    def send_batch(
        self, backend: BaseEmailBackend, messages: list[EmailMessage]
    ) -> list[str | Exception]:
        """Send `messages` (at most `batch_limit`) in one call over `backend`.

        Returns, for each message in order, the provider's message id or the exception that says
        why the provider refused that one (see `classify`). Raises when the call as a whole
        failed: then none was sent, or nobody can tell which were.
        """
        raise NotImplementedError(f"{self.name} sends one email a call")

    def classify(self, exc: Exception) -> Failure:
        """What a send that raised `exc` means; see Failure."""
        return classify_common(exc)

    def bounce_is_permanent(self, esp_event: dict[str, Any]) -> bool:
        """Whether a bounce (the provider's own webhook payload) means: never mail this again."""
        return False


# Status codes that say "not now": a rate limit, a timeout on their side, an outage.
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def classify_common(exc: Exception) -> Failure:
    """The rules every HTTP-based provider shares; provider modules refine them."""
    reason = describe_exception(exc)
    if isinstance(exc, AnymailRecipientsRefused):
        status = getattr(getattr(exc.email_message, "anymail_status", None), "status", None)
        inactive = bool(status) and status <= {"rejected"}
        return Failure("permanent", reason, suppress_address=inactive)
    # anymail raises its own error "from" the requests exception when no answer came back.
    cause = exc.__cause__ if isinstance(exc.__cause__, requests.RequestException) else exc
    if isinstance(cause, requests.RequestException) and not isinstance(cause, requests.HTTPError):
        if _never_sent(cause):
            # Refused, no such host, a connect timeout, a failed handshake: nothing went out.
            return Failure("transient", reason)
        # A read timeout, or the connection dropped after the request went out.
        return Failure("unknown", reason)
    status_code = getattr(exc, "status_code", None)
    if isinstance(exc, AnymailError) and status_code is not None:
        if status_code in TRANSIENT_STATUS:
            return Failure("transient", reason, retry_after=_retry_after(exc))
        return Failure("permanent", reason)
    # Anything else (a bug, a refused configuration, an unsupported feature) will fail again.
    return Failure("permanent", reason)


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request certainly never reached the provider."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else None
        cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the reason
        return isinstance(cause, urllib3.exceptions.NewConnectionError)
    return False


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = float(headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def describe_exception(exc: Exception) -> str:
    """One readable line or paragraph for the outbox's `reason` column."""
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]
