"""What a config is: its public shape (for people and type checkers) and the loaded definitions.

Nothing here reads files or runs the config: `segflow.config.loading` does that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import time, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from .introspection import sha256
from .sending_rules import FrequencyCapDef, SendWindowDef

# ---------------------------------------------------------------------------------------------
# The public shape of a config, for type checkers and for people reading it.


class EmailProviderSettings(TypedDict):
    name: Literal["postmark", "amazon_ses", "django"]
    # Postmark: the server token belongs in POSTMARK_SERVER_TOKEN; `api_key` still works.
    api_key: NotRequired[str]
    server_token: NotRequired[str]
    message_stream: NotRequired[str]
    broadcast_message_stream: NotRequired[str]
    # Amazon SES: credentials come from the environment (boto3).
    region: NotRequired[str]
    configuration_set: NotRequired[str]


class EmailProviderConfig(TypedDict):
    config: EmailProviderSettings
    from_address: str
    reply_to: NotRequired[str]


class TemplateConfig(TypedDict):
    subject: str | Callable[..., str]
    html: str | Callable[..., str]


class SegmentConfig(TypedDict, total=False):
    evaluator: Callable[..., Any]
    sql: str
    params: Callable[..., dict[str, Any]]
    refresh_every: timedelta | None


class SendWindowConfig(TypedDict):
    start: str | time  # "09:00"
    end: str | time  # "20:00"; at or before `start`: the next day's
    days: NotRequired[str | list[str]]  # "mon-fri", "sat,sun", ["mon", "wed"]; else every day


class FrequencyCapConfig(TypedDict):
    emails: int
    within: timedelta


class CampaignConfig(TypedDict):
    segments: list[str]
    exclude_segments: NotRequired[list[str]]
    behavior: Literal["static", "dynamic"]
    flow: Callable[..., Iterator[Any]]
    send_window: NotRequired[SendWindowConfig]
    # What a push that changes the flow does with users whose steps the new flow no longer
    # replays (see docs/config.md): "end" (the default), "restart" or "keep_old".
    on_change: NotRequired[Literal["end", "restart", "keep_old"]]


class TransactionConfig(TypedDict):
    event: str
    subject: str | Callable[..., str]
    html: str | Callable[..., str]


class SegflowConfig(TypedDict, total=False):
    email_provider: EmailProviderConfig
    templates: dict[str, TemplateConfig]
    segments: dict[str, SegmentConfig]
    campaigns: dict[str, CampaignConfig]
    transactions: dict[str, TransactionConfig]
    frequency_cap: FrequencyCapConfig
    timezone_attribute: str
    default_timezone: str


# ---------------------------------------------------------------------------------------------
# The loaded, validated definitions.


class ConfigError(Exception):
    """The config is wrong; the message names the key and the problem."""


PROVIDERS = ("postmark", "amazon_ses", "django")
BEHAVIORS = ("static", "dynamic")
ON_CHANGE = ("end", "restart", "keep_old")
MAX_NAME_LENGTH = 255


class ProviderSettings(Protocol):
    """What the config needs to know of an email provider: which settings it takes and which of
    them may be shown. Each provider registers itself (see `register_email_provider`)."""

    def check_settings(self, settings: dict[str, Any], path: str) -> None: ...

    def describe(self, settings: dict[str, Any]) -> dict[str, str]: ...


_email_providers: dict[str, ProviderSettings] = {}


def register_email_provider(name: str, provider: ProviderSettings) -> None:
    """Called by the email app for each provider it has: the config asks it about its settings."""
    _email_providers[name] = provider


def email_provider_settings(name: str) -> ProviderSettings | None:
    return _email_providers.get(name)


@dataclass(frozen=True)
class EmailProviderDef:
    name: str
    settings: dict[str, Any]
    from_address: str
    reply_to: str = ""

    def describe(self) -> dict[str, Any]:
        """What a push shows and stores: never the secrets."""
        described: dict[str, Any] = {
            "name": self.name,
            "from_address": self.from_address,
            "reply_to": self.reply_to,
        }
        provider = email_provider_settings(self.name)
        options = provider.describe(self.settings) if provider else dict(self.settings)
        if options:  # (left out when empty, so older pushes compare equal)
            described["options"] = options
        return described


@dataclass(frozen=True)
class EmailContentDef:
    """What templates and transactions share: a subject and an HTML body."""

    name: str
    subject: str | Callable[..., str]
    html: str | Callable[..., str]
    html_path: Path | None
    source: str
    fingerprint: str


@dataclass(frozen=True)
class TemplateDef(EmailContentDef):
    pass


@dataclass(frozen=True)
class TransactionDef(EmailContentDef):
    event: str = ""


@dataclass(frozen=True)
class SegmentDef:
    name: str
    sql: str | None
    evaluator: Callable[..., Any] | None
    params: Callable[..., dict[str, Any]] | None
    # How often the whole segment is re-evaluated because time alone changes its answer.
    refresh_every: timedelta | None
    source: str
    fingerprint: str

    @property
    def kind(self) -> str:
        return "sql" if self.sql is not None else "evaluator"


@dataclass(frozen=True)
class CampaignDef:
    name: str
    segments: tuple[str, ...]
    exclude_segments: tuple[str, ...]
    behavior: str
    flow: Callable[..., Iterator[Any]]
    source: str
    fingerprint: str
    flow_fingerprint: str
    # Applied by the push that changes the flow, to the cursors that diverge; not part of the
    # fingerprints: it changes nothing about how the campaign runs.
    on_change: str = "end"
    send_window: SendWindowDef | None = None


# Where a user's time zone is read from when the config does not say.
TIMEZONE_ATTRIBUTE = "timezone"
DEFAULT_TIMEZONE = "UTC"


@dataclass
class Config:
    location: str
    base_dir: Path
    email_provider: EmailProviderDef | None
    templates: dict[str, TemplateDef] = field(default_factory=dict)
    segments: dict[str, SegmentDef] = field(default_factory=dict)
    campaigns: dict[str, CampaignDef] = field(default_factory=dict)
    transactions: dict[str, TransactionDef] = field(default_factory=dict)
    frequency_cap: FrequencyCapDef | None = None
    timezone_attribute: str = TIMEZONE_ATTRIBUTE
    default_timezone: str = DEFAULT_TIMEZONE
    # The files it was loaded from, when it was loaded from a pushed version's bundle
    # (segflow.config.bundle.Bundle): a push of this config stores those very files.
    bundle: Any = field(default=None, repr=False, compare=False)
    # The number of the pushed version it was loaded from (ConfigVersion.number), once known:
    # what outbox rows and cursor steps record as the version that made them.
    version: int | None = field(default=None, compare=False)

    @cached_property
    def fingerprint(self) -> str:
        parts = {
            "email_provider": self.email_provider.describe() if self.email_provider else None,
            "templates": {k: v.fingerprint for k, v in self.templates.items()},
            "segments": {k: v.fingerprint for k, v in self.segments.items()},
            "campaigns": {k: v.fingerprint for k, v in self.campaigns.items()},
            "transactions": {k: v.fingerprint for k, v in self.transactions.items()},
        }
        # Only when set, so that the fingerprints of configs without them stay as they were.
        if self.frequency_cap is not None:
            parts["frequency_cap"] = self.frequency_cap.describe()
        if (self.timezone_attribute, self.default_timezone) != (
            TIMEZONE_ATTRIBUTE,
            DEFAULT_TIMEZONE,
        ):
            parts["time_zones"] = [self.timezone_attribute, self.default_timezone]
        return sha256(json.dumps(parts, sort_keys=True))

    def segment_as_pushed(self, name: str, fingerprint: str) -> SegmentDef | None:
        """Segment `name`, if this config has it as it was pushed (same fingerprint)."""
        definition = self.segments.get(name)
        return (
            definition if definition is not None and definition.fingerprint == fingerprint else None
        )

    def campaign_as_pushed(self, name: str, flow_fingerprint: str) -> CampaignDef | None:
        """Campaign `name`, if this config has the flow that was pushed for it."""
        definition = self.campaigns.get(name)
        if definition is None or definition.flow_fingerprint != flow_fingerprint:
            return None
        return definition

    def transactions_for_event(self, event_name: str) -> list[TransactionDef]:
        return [t for t in self.transactions.values() if t.event == event_name]
