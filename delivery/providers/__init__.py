"""Email providers: one small module each, behind one interface (see base.EmailProvider).

`email_provider.config.name` in the config picks one: "postmark" and "amazon_ses" deliver through
django-anymail; "django" (and a config without `email_provider`) through Django's EMAIL_BACKEND,
the console in the embedded default.
"""

from __future__ import annotations

from django.conf import settings

from segflow.config import EmailProviderDef, register_email_provider

from .amazon_ses import AmazonSESProvider
from .base import EmailProvider, Failure
from .django import DjangoProvider
from .postmark import PostmarkProvider

PROVIDERS: dict[str, EmailProvider] = {
    p.name: p for p in (PostmarkProvider(), AmazonSESProvider(), DjangoProvider())
}
# The config asks each provider which settings it takes and which of them may be shown.
for _provider in PROVIDERS.values():
    register_email_provider(_provider.name, _provider)

__all__ = [
    "PROVIDERS",
    "EmailProvider",
    "Failure",
    "provider_for",
    "provider_for_esp",
    "provider_named",
    "from_address",
]


def provider_named(name: str) -> EmailProvider:
    return PROVIDERS[name]


def provider_for(definition: EmailProviderDef | None) -> EmailProvider:
    """The provider that delivers for `definition` (Django's backend when there is none)."""
    if definition is None or settings.SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND:
        return PROVIDERS["django"]
    return PROVIDERS[definition.name]


def provider_for_esp(esp_name: str) -> EmailProvider | None:
    """The provider whose webhook events anymail labels `esp_name` ("Postmark", ...)."""
    return next((p for p in PROVIDERS.values() if p.esp_name and p.esp_name == esp_name), None)


def from_address(definition: EmailProviderDef | None) -> str:
    return definition.from_address if definition else settings.DEFAULT_FROM_EMAIL
