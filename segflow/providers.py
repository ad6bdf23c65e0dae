"""Which Django email connection delivers segflow's email, from the config's `email_provider`."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import get_connection

from .config import EmailProviderDef

# One anymail backend per provider; the config's provider settings go to it as keyword arguments.
ANYMAIL_BACKENDS = {
    "postmark": "anymail.backends.postmark.EmailBackend",
    "amazon_ses": "anymail.backends.amazon_ses.EmailBackend",
}


def email_connection(provider: EmailProviderDef | None):
    """A connection for `provider`, or Django's EMAIL_BACKEND when there is none."""
    if provider is None or provider.name == "django" or settings.SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND:
        return get_connection()
    options = dict(provider.settings)
    if provider.name == "postmark" and "api_key" in options:
        # The config says api_key, as the original did; anymail calls Postmark's key server_token.
        options["server_token"] = options.pop("api_key")
    return get_connection(ANYMAIL_BACKENDS[provider.name], **options)


def from_address(provider: EmailProviderDef | None) -> str:
    return provider.from_address if provider else settings.DEFAULT_FROM_EMAIL
