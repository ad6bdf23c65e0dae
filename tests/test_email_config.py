"""The config's email_provider: each provider's keys are checked, and secrets stay out of pushes."""

from __future__ import annotations

import pytest

from segflow.config import ConfigError, validate_config


def provider(settings: dict, **extra) -> dict:
    return {"email_provider": {"config": settings, "from_address": "hi@acme.test", **extra}}


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"name": "postmark", "mesage_stream": "outbound"},
            "email_provider.config.mesage_stream: not a setting of 'postmark'; expected api_key, "
            "broadcast_message_stream, message_stream, server_token",
        ),
        (
            {"name": "amazon_ses", "region": ""},
            "email_provider.config.region: must be a non-empty string",
        ),
        (
            {"name": "amazon_ses", "aws_secret_access_key": "x"},
            "email_provider.config.aws_secret_access_key: not a setting of 'amazon_ses'",
        ),
        (
            {"name": "django", "message_stream": "x"},
            "email_provider.config.message_stream: not a setting of 'django'; expected nothing",
        ),
    ],
)
def test_a_wrong_provider_setting_is_named(settings, message):
    with pytest.raises(ConfigError) as error:
        validate_config(provider(settings))
    assert str(error.value).startswith(message)


def test_a_reply_to_must_be_an_address():
    with pytest.raises(ConfigError, match="email_provider.reply_to: must be an email address"):
        validate_config(provider({"name": "postmark"}, reply_to="support"))


def test_a_push_shows_the_streams_but_never_the_token():
    config = validate_config(
        provider({"name": "postmark", "api_key": "secret-token", "message_stream": "outbound"})
    )
    described = config.email_provider.describe()
    assert described == {
        "name": "postmark",
        "from_address": "hi@acme.test",
        "reply_to": "",
        "options": {"message_stream": "outbound"},
    }
    assert "secret-token" not in repr(described)
