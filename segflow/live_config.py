"""Which config this process runs: the one last pushed, or it waits.

The config is code on each machine, and a push records its fingerprint. Every unit of work starts
with `live_config.sync()`: after a push it loads the config again (from SEGFLOW_CONFIG, or else
from where the push was made) and checks it is the pushed one. Work that needs the pushed config
is left pending while a process runs another one, and the schedule hands it out again later.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from segments.models import Segment

from .config import Config, ConfigError, SegmentDef, load_config
from .models import Push

logger = logging.getLogger(__name__)


class LiveConfig:
    """The one answer to "which config does this process run, and is this part of it live"."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._config: Config | None = None
        self._pushed_fingerprint: str | None = None  # of the last push this process has seen
        self._handled_push: str | None = None  # the last push this process has tried to load

    def current(self) -> Config:
        """The config this process runs, loaded once from settings.SEGFLOW_CONFIG."""
        if self._config is None:
            with self._lock:
                if self._config is None:
                    self._config = load_config(settings.SEGFLOW_CONFIG)
        return self._config

    def set(self, config: Config | None) -> None:
        """Run `config` from now on (after a push, or in tests); None loads it again lazily."""
        with self._lock:
            self._config = config

    def reset(self) -> None:
        """Forget the config and the pushes seen, as a process that just started."""
        with self._lock:
            self._config = None
            self._pushed_fingerprint = self._handled_push = None

    def sync(self) -> Config:
        """The process's config, loaded again once after each push."""
        config = self.current()
        latest = Push.objects.order_by("-id").values_list("fingerprint", "location").first()
        if latest is None:
            self._pushed_fingerprint = None
            return config
        fingerprint, pushed_location = latest
        self._pushed_fingerprint = fingerprint
        if fingerprint == config.fingerprint:
            return config
        with self._lock:
            if self._handled_push == fingerprint:
                return self.current()
            self._handled_push = fingerprint
            for location in dict.fromkeys([settings.SEGFLOW_CONFIG, pushed_location]):
                if not location:
                    continue
                try:
                    candidate = load_config(location)
                except ConfigError as exc:
                    logger.warning("could not load the config at %s: %s", location, exc)
                    continue
                if candidate.fingerprint == fingerprint:
                    self._config = candidate
                    logger.info("now running the pushed config from %s", location)
                    return candidate
            logger.error(
                "this process's config (%s) is not the one last pushed (from %s): work that "
                "needs it waits until this process runs the pushed config; start it with "
                "SEGFLOW_CONFIG=%s, or push the config it has",
                config.location,
                pushed_location or "an unknown place",
                pushed_location or "<the pushed file>",
            )
            return config

    def is_live(self, config: Config) -> bool:
        """Whether `config` is the one last pushed (as of this process's last sync)."""
        return self._pushed_fingerprint is None or config.fingerprint == self._pushed_fingerprint

    def segments(self, config: Config) -> list[tuple[Segment, SegmentDef]]:
        """The pushed segments that `config` has as they were pushed, with their definitions."""
        pairs = (
            (row, config.segment_as_pushed(row.name, row.fingerprint))
            for row in Segment.objects.all()
        )
        return [(row, definition) for row, definition in pairs if definition is not None]


live_config = LiveConfig()
