"""Amazon SNS message signatures: a message to the SES webhook is believed only if Amazon signed it.

Amazon SES publishes its events to an SNS topic, and SNS posts each message to segflow's webhook,
signed with the topic's key (SignatureVersion 1: RSA with SHA-1, 2: RSA with SHA-256). The
certificate is fetched from `SigningCertURL`, which must be an https URL on an Amazon SNS host
(`sns.<region>.amazonaws.com`, or `.amazonaws.com.cn`): a message that names any other place
for its certificate is refused before anything is fetched. Certificates are kept by URL (SNS
gives each certificate its own URL), so one is fetched once per process.

With SEGFLOW_SES_ALLOWED_TOPIC_ARNS set, only messages from those topics are taken: anyone can
create a topic and sign messages with it, so the list names the ones that are yours.

anymail checks the shared secret (basic auth) and that the SNS headers match the body, and has
no option to check the signature ("Future: Verify SNS message signature" in its source), so it
is done here. See https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

# cryptography's x509 and hazmat modules are imported when a message is checked, not with the
# URLconf: they are about 8 MB in every web and worker process, and most deployments never
# receive an SNS message.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger(__name__)

# SNS's own hosts, in the commercial and the China partitions (as AWS's own validators check).
CERTIFICATE_HOST = re.compile(r"^sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?$")
HASHES = {"1": "SHA1", "2": "SHA256"}
# The fields each kind of message signs, in this order (a missing optional one is left out).
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
OPTIONAL_FIELDS = {"Subject"}
MAX_CERTIFICATE_BYTES = 64 * 1024
CACHE_SIZE = 64


class InvalidMessage(ValueError):
    """The message is not one Amazon SNS signed for an allowed topic; the text says why."""


class CertificateUnavailable(Exception):
    """The signing certificate could not be fetched now (a network problem): try again later."""


def verify(message: Any) -> None:
    """Raise InvalidMessage unless `message` (the parsed body SNS posted) carries a valid
    signature of Amazon SNS, from an allowed topic; CertificateUnavailable if the certificate
    could not be fetched."""
    if not isinstance(message, dict):
        raise InvalidMessage("the body is not an SNS message (a JSON object)")
    kind = message.get("Type")
    if kind not in SIGNED_FIELDS:
        raise InvalidMessage(f"Type: not an SNS message type: {kind!r}")
    version = message.get("SignatureVersion")
    if version not in HASHES:
        raise InvalidMessage(f"SignatureVersion: must be '1' or '2', got {version!r}")
    _check_topic(message.get("TopicArn"))
    try:
        signature = base64.b64decode(_text(message, "Signature"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMessage("Signature: not base64") from exc
    public_key = certificate_key(_certificate_url(message.get("SigningCertURL")))
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        public_key.verify(
            signature,
            signed_text(message).encode(),
            padding.PKCS1v15(),
            getattr(hashes, HASHES[version])(),
        )
    except InvalidSignature:
        raise InvalidMessage(
            "Signature: does not match the message (not signed by Amazon SNS, or changed)"
        ) from None


def signed_text(message: dict) -> str:
    """The text SNS signs: `name\\nvalue\\n` for each signed field of the message's type."""
    parts = []
    for name in SIGNED_FIELDS[message["Type"]]:
        if name in OPTIONAL_FIELDS and name not in message:
            continue
        parts.append(f"{name}\n{_text(message, name)}\n")
    return "".join(parts)


def _text(message: dict, name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise InvalidMessage(f"{name}: missing, or not a string")
    return value


def _check_topic(topic_arn: Any) -> None:
    allowed = settings.SEGFLOW_SES_ALLOWED_TOPIC_ARNS
    if not isinstance(topic_arn, str) or not topic_arn.startswith("arn:"):
        raise InvalidMessage(f"TopicArn: not a topic ARN: {topic_arn!r}")
    if allowed and topic_arn not in allowed:
        raise InvalidMessage(
            f"TopicArn: {topic_arn} is not in SEGFLOW_SES_ALLOWED_TOPIC_ARNS; add it there "
            "if the topic is yours"
        )


def _certificate_url(url: Any) -> str:
    """`url`, if it is an https URL of a certificate on an Amazon SNS host."""
    if not isinstance(url, str):
        raise InvalidMessage("SigningCertURL: missing, or not a string")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or not CERTIFICATE_HOST.match(parts.hostname or "")
        or not parts.path.endswith(".pem")
    ):
        raise InvalidMessage(
            f"SigningCertURL: {url!r} is not an https URL of a certificate on an Amazon SNS "
            "host (sns.<region>.amazonaws.com)"
        )
    return url


def fetch_certificate(url: str) -> bytes:
    """The PEM at `url` (already checked to be on an Amazon SNS host). Tests replace this."""
    try:
        response = requests.get(url, timeout=(5, 10), allow_redirects=False, stream=True)
        response.raise_for_status()
        body = response.raw.read(MAX_CERTIFICATE_BYTES + 1, decode_content=True)
    except (requests.RequestException, OSError) as exc:
        raise CertificateUnavailable(f"fetching {url} failed: {exc}") from exc
    if len(body) > MAX_CERTIFICATE_BYTES:
        raise InvalidMessage(f"SigningCertURL: {url} is not a certificate (too large)")
    return body


_keys: dict[str, rsa.RSAPublicKey] = {}
_keys_lock = threading.Lock()


def certificate_key(url: str) -> rsa.RSAPublicKey:
    """The RSA public key of the certificate at `url`, fetched once per process."""
    with _keys_lock:
        key = _keys.get(url)
    if key is not None:
        return key
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        certificate = x509.load_pem_x509_certificate(fetch_certificate(url))
    except ValueError as exc:
        raise InvalidMessage(f"SigningCertURL: {url} holds no PEM certificate") from exc
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise InvalidMessage(f"SigningCertURL: the certificate at {url} is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidMessage(f"SigningCertURL: the certificate at {url} has no RSA key")
    with _keys_lock:
        if len(_keys) >= CACHE_SIZE:
            _keys.clear()
        _keys[url] = key
    return key


def forget_certificates() -> None:
    """Drop the certificates kept so far (tests that swap certificates)."""
    with _keys_lock:
        _keys.clear()
