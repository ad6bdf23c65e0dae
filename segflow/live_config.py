"""Which config this process runs: the one last pushed, or it waits.

The config is code on each machine, and a push records its fingerprint. Every unit of work starts
with `sync_config()`: after a push it loads the config again (from SEGFLOW_CONFIG, or else from
where the push was made) and checks it is the pushed one. Work that needs the pushed config is
left pending while a process runs another one, and the schedule hands it out again later.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from .config import Config, ConfigError, get_config, load_config, set_config
from .models import Push

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pushed_fingerprint: str | None = None  # of the last push this process has seen
_handled_push: str | None = None  # the last push this process has tried to load


def sync_config() -> Config:
    """The process's config, loaded again once after each push."""
    global _pushed_fingerprint, _handled_push
    config = get_config()
    latest = Push.objects.order_by("-id").values_list("fingerprint", "location").first()
    if latest is None:
        _pushed_fingerprint = None
        return config
    fingerprint, pushed_location = latest
    _pushed_fingerprint = fingerprint
    if fingerprint == config.fingerprint:
        return config
    with _lock:
        if _handled_push == fingerprint:
            return get_config()
        _handled_push = fingerprint
        for location in dict.fromkeys([settings.SEGFLOW_CONFIG, pushed_location]):
            if not location:
                continue
            try:
                candidate = load_config(location)
            except ConfigError as exc:
                logger.warning("could not load the config at %s: %s", location, exc)
                continue
            if candidate.fingerprint == fingerprint:
                set_config(candidate)
                logger.info("now running the pushed config from %s", location)
                return candidate
        logger.error(
            "this process's config (%s) is not the one last pushed (from %s): work that needs "
            "it waits until this process runs the pushed config; start it with "
            "SEGFLOW_CONFIG=%s, or push the config it has",
            config.location,
            pushed_location or "an unknown place",
            pushed_location or "<the pushed file>",
        )
        return config


def is_live(config: Config) -> bool:
    """Whether `config` is the one last pushed (as of this process's last sync)."""
    return _pushed_fingerprint is None or config.fingerprint == _pushed_fingerprint
