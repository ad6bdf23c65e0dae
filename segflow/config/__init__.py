"""The segflow config: its public shape, the loaded definitions, and loading them.

- `definitions`: `SegflowConfig` (what a config file writes) and the frozen definitions a loaded
  config is made of (`Config`, `CampaignDef`, ...);
- `loading`: importing a config file and validating every key, with errors that name the key;
- `introspection`: reading a config's functions without running them (sources, fingerprints);
- `sending_rules`: when campaign emails may go out (send windows, the frequency cap);
- `bundle`: a config as files (its folder), as a push stores it and every process loads it.

Which config a process runs is not here: see `segflow.live_config`.
"""

from .bundle import Bundle, bundle_from_location, bundle_from_payload, load_bundle
from .definitions import (
    BEHAVIORS,
    MAX_NAME_LENGTH,
    PROVIDERS,
    CampaignConfig,
    CampaignDef,
    Config,
    ConfigError,
    EmailContentDef,
    EmailProviderConfig,
    EmailProviderDef,
    EmailProviderSettings,
    FrequencyCapConfig,
    SegflowConfig,
    SegmentConfig,
    SegmentDef,
    SendWindowConfig,
    TemplateConfig,
    TemplateDef,
    TransactionConfig,
    TransactionDef,
    register_email_provider,
)
from .introspection import call_with_arity, source_of
from .loading import import_config_module, load_config, validate_config
from .sending_rules import FrequencyCapDef, SendWindowDef, user_zone

__all__ = [
    "BEHAVIORS",
    "Bundle",
    "MAX_NAME_LENGTH",
    "PROVIDERS",
    "CampaignConfig",
    "CampaignDef",
    "Config",
    "ConfigError",
    "EmailContentDef",
    "EmailProviderConfig",
    "EmailProviderDef",
    "EmailProviderSettings",
    "FrequencyCapConfig",
    "FrequencyCapDef",
    "SegflowConfig",
    "SegmentConfig",
    "SegmentDef",
    "SendWindowConfig",
    "SendWindowDef",
    "TemplateConfig",
    "TemplateDef",
    "TransactionConfig",
    "TransactionDef",
    "bundle_from_location",
    "bundle_from_payload",
    "call_with_arity",
    "import_config_module",
    "load_bundle",
    "load_config",
    "register_email_provider",
    "source_of",
    "user_zone",
    "validate_config",
]
