"""A console email backend that prints each email as a person reads it, not as MIME.

The embedded default prints every email on the server's console. Django's console backend prints
the whole message source (headers, both parts, base64 and quoted-printable): about 45 lines an
email. This one prints who, the subject and the text part; the admin's outbox shows the rest.
"""

from __future__ import annotations

import sys
import threading

from django.core.mail.backends.base import BaseEmailBackend

RULE = "-" * 72


class EmailBackend(BaseEmailBackend):
    def __init__(self, *args, stream=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stream = stream or sys.stdout
        self._lock = threading.RLock()

    def send_messages(self, email_messages) -> int:
        sent = 0
        with self._lock:
            for message in email_messages:
                self.stream.write(self.format(message))
                self.stream.flush()
                sent += 1
        return sent

    @staticmethod
    def format(message) -> str:
        body = (message.body or "").strip()
        return (
            f"{RULE}\n"
            f"Email to {', '.join(message.recipients())} from {message.from_email}\n"
            f"Subject: {message.subject}\n\n"
            f"{body}\n"
            f"{RULE}\n"
        )
