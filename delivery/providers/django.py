"""Django's own EMAIL_BACKEND: the console in the embedded default, locmem in tests, or SMTP."""

from __future__ import annotations

import smtplib

from django.core.mail.backends import smtp

from .base import EmailProvider, Failure, describe_exception


class DjangoProvider(EmailProvider):
    name = "django"
    backend = None

    def keeps_connection(self, backend) -> bool:
        # An SMTP server may hang up between messages, and smtplib notices only once the next
        # message is under way, when nobody can tell whether it was taken: one per connection.
        return not isinstance(backend, smtp.EmailBackend)

    def classify(self, exc: Exception) -> Failure:
        reason = describe_exception(exc)
        if isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPSenderRefused):
            return Failure("permanent", reason)
        if isinstance(exc, smtplib.SMTPResponseException):
            return Failure("transient" if 400 <= exc.smtp_code < 500 else "permanent", reason)
        if isinstance(exc, smtplib.SMTPConnectError | ConnectionRefusedError):
            return Failure("transient", reason)
        if isinstance(exc, smtplib.SMTPServerDisconnected | TimeoutError):
            # The message may have been handed over before the line went quiet.
            return Failure("unknown", reason)
        return Failure("permanent", reason)
