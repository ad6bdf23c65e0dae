"""Amazon SES (the v2 API), through anymail's Amazon SES backend and boto3.

Credentials are boto3's: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, a
profile, or the machine's role. The region is the config's `region`, else AWS_REGION /
AWS_DEFAULT_REGION; `configuration_set` names the SES configuration set that publishes
deliveries, bounces, complaints, opens and clicks to the SNS topic segflow's webhook listens to.
"""

from __future__ import annotations

from typing import Any

from anymail.exceptions import AnymailAPIError
from django.conf import settings as django_settings

from .base import EmailProvider, Failure, classify_common, describe_exception

# Error codes of SES's API that mean "not now".
THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "LimitExceededException",
    "ServiceUnavailable",
    "InternalFailure",
    "RequestTimeout",
}


class AmazonSESProvider(EmailProvider):
    name = "amazon_ses"
    esp_name = "Amazon SES"
    backend = "anymail.backends.amazon_ses.EmailBackend"
    options = {
        "region": "the AWS region of SES, e.g. eu-west-1 (else AWS_REGION from the environment)",
        "configuration_set": "the SES configuration set of every email",
    }

    def connection_kwargs(self, settings: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if settings.get("region"):
            anymail = getattr(django_settings, "ANYMAIL", {}) or {}
            client_params = dict(anymail.get("AMAZON_SES_CLIENT_PARAMS") or {})
            client_params["region_name"] = settings["region"]
            kwargs["client_params"] = client_params
        if settings.get("configuration_set"):
            kwargs["configuration_set_name"] = settings["configuration_set"]
        return kwargs

    def classify(self, exc: Exception) -> Failure:
        if not isinstance(exc, AnymailAPIError):
            return classify_common(exc)
        # Imported here: botocore costs every process megabytes, and only SES's senders need it.
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        cause, reason = exc.__cause__, describe_exception(exc)
        if isinstance(cause, ConnectTimeoutError | EndpointConnectionError):
            return Failure("transient", reason)
        if isinstance(cause, ReadTimeoutError | ConnectionClosedError):
            return Failure("unknown", reason)
        response = getattr(cause, "response", None) or {}
        code = response.get("Error", {}).get("Code", "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in THROTTLED or status >= 500 or status == 429:
            return Failure("transient", reason)
        # MessageRejected, an unverified sender, a paused account: not fixed by waiting.
        return Failure("permanent", reason)

    def bounce_is_permanent(self, esp_event: dict[str, Any]) -> bool:
        # "Permanent", or "Transient" / "Undetermined" (SES keeps no address list for those).
        return (esp_event.get("bounce") or {}).get("bounceType") == "Permanent"
