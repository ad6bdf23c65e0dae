"""What the email tests share: a local HTTP server standing in for Postmark's API, and configs.

The server is the only fake: anymail, requests and segflow run as they do in production, and
anymail's POSTMARK_API_URL setting points at the server instead of api.postmarkapp.com.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Answer:
    status: int
    body: Any
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class FakePostmark:
    """Records every request; answers each with the next scripted Answer, or with success."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.requests.append(
                        Recorded("POST", self.path, dict(self.headers.items()), body)
                    )
                    answer = fake.answers.pop(0) if fake.answers else None
                if answer is None and self.path == "/email/batch":
                    answer = Answer(200, [_accepted(message) for message in body])
                elif answer is None:
                    answer = Answer(200, _accepted(body))
                if answer.delay:
                    time.sleep(answer.delay)
                payload = json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout test)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def answer(self, status: int, body: Any, *, delay: float = 0.0, **headers: str) -> None:
        self.answers.append(Answer(status, body, delay, headers))

    @property
    def emails(self) -> list[dict]:
        """Every message the fake received, whether alone or in a batch."""
        emails: list[dict] = []
        for request in self.requests:
            if request.path == "/email":
                emails.append(request.body)
            elif request.path == "/email/batch":
                emails.extend(request.body)
        return emails

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _accepted(message: Any) -> dict:
    return {
        "To": message.get("To", "") if isinstance(message, dict) else "",
        "SubmittedAt": "2026-03-02T09:00:00.0000000Z",
        "MessageID": str(uuid.uuid4()),
        "ErrorCode": 0,
        "Message": "OK",
    }


@pytest.fixture
def postmark(settings):
    """A fake Postmark API, and settings that send real anymail requests to it."""
    fake = FakePostmark()
    settings.SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND = False
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "POSTMARK_API_URL": fake.url,
        "POSTMARK_SERVER_TOKEN": "server-token-from-the-environment",
        "REQUESTS_TIMEOUT": 0.5,
    }
    yield fake
    fake.stop()


BASE_HTML = """<!doctype html>
<html><head><style>
  p { color: #475569; }
  .button { background: #2563eb; color: #ffffff; }
  @media (max-width: 480px) { .button { display: block; } }
</style></head>
<body>
<div style="display: none; max-height: 0; overflow: hidden;">{% block preview %}{% endblock %}</div>
{% block content %}{% endblock %}
<p class="footer">Acme{% if unsubscribe_url %}
  <a href="{{ unsubscribe_url }}">Unsubscribe</a>{% endif %}</p>
</body></html>
"""

EMAILS = {
    "emails/base.html": BASE_HTML,
    "emails/welcome.html": (
        '{% extends "emails/base.html" %}{% block preview %}Welcome aboard!{% endblock %}'
        "{% block content %}<p>Thanks for joining us {{ user.name }}!</p>"
        '<p><a class="button" href="https://example.com/start">Get Started</a></p>{% endblock %}'
    ),
    "emails/tips.html": (
        '{% extends "emails/base.html" %}{% block content %}<p>Tips for {{ user.name }}</p>'
        "{% endblock %}"
    ),
    "emails/receipt.html": (
        '{% extends "emails/base.html" %}{% block preview %}Thanks for your order!{% endblock %}'
        "{% block content %}<p>Order {{ event.orderId }} confirmed.</p>{% endblock %}"
    ),
}


def email_config(provider: str) -> str:
    """A config with a two-email campaign and a receipt, sent through `provider`."""
    return f"""
from segflow.config import SegflowConfig

def drip(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("tips")

config: SegflowConfig = {{
    "email_provider": {{"config": {provider}, "from_address": "Acme <hello@acme.test>",
                        "reply_to": "support@acme.test"}},
    "templates": {{
        "welcome": {{"subject": lambda user: f"Welcome {{user.name}}!",
                     "html": "emails/welcome.html"}},
        "tips": {{"subject": "Tips", "html": "emails/tips.html"}},
    }},
    "segments": {{"everyone": {{"sql": "SELECT u.id FROM users u"}}}},
    "campaigns": {{"drip": {{"segments": ["everyone"], "behavior": "static", "flow": drip}}}},
    "transactions": {{
        "receipt": {{"event": "purchase", "subject": "Your receipt",
                     "html": "emails/receipt.html"}},
    }},
}}
"""


POSTMARK = '{"name": "postmark", "message_stream": "outbound", "broadcast_message_stream": "news"}'


def put_user(api, user_id: str, **attributes) -> None:
    response = api.put(f"/api/users/{user_id}", {"attributes": attributes}, format="json")
    assert response.status_code in (200, 201), response.content


def emit(api, user_id: str, name: str, **attributes) -> int:
    response = api.post(
        f"/api/users/{user_id}/events", {"name": name, "attributes": attributes}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def basic_auth(secret: str) -> str:
    return "Basic " + base64.b64encode(secret.encode()).decode()


WEBHOOK_SECRET = "segflow:hook-secret"


# Amazon SNS: a key and a self-signed certificate stand in for the topic's, and sign messages
# as SNS does (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html).

SNS_CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem"
SNS_TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:ses-events"


class SnsSigner:
    """Signs SNS messages with its own key; `pem` is its certificate."""

    def __init__(self, common_name: str = "sns.amazonaws.com") -> None:
        from datetime import UTC, datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2100, 1, 1, tzinfo=UTC))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: dict, version: str = "1") -> dict:
        """`message` with SignatureVersion, SigningCertURL (unless set) and its Signature."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        message = {"SignatureVersion": version, "SigningCertURL": SNS_CERT_URL, **message}
        if message["Type"] == "Notification":
            names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                     "Type"]  # fmt: skip
        text = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), digest)
        message["Signature"] = base64.b64encode(signature).decode()
        return message


SNS_SIGNER = SnsSigner()


@dataclass
class CertificateFetches:
    served: dict[str, bytes]
    fetched: list[str] = field(default_factory=list)


@pytest.fixture
def sns_certificates(monkeypatch):
    """The certificate fetch answers SNS_CERT_URL with SNS_SIGNER's certificate, and records
    the URLs asked for. (No test reaches Amazon.)"""
    from delivery import sns

    fetches = CertificateFetches(served={SNS_CERT_URL: SNS_SIGNER.pem})

    def fetch(url: str) -> bytes:
        fetches.fetched.append(url)
        if url not in fetches.served:
            raise sns.CertificateUnavailable(f"no certificate at {url} in this test")
        return fetches.served[url]

    sns.forget_certificates()
    monkeypatch.setattr(sns, "fetch_certificate", fetch)
    yield fetches
    sns.forget_certificates()
