"""Which config this process runs: the version last pushed, loaded from the database.

A push stores the config's files as a numbered version (`ConfigVersion`), and the last push says
which version is live. Every unit of work starts with `live_config.sync()`: when the live version
is not the one this process has loaded, it writes that version's files to the local cache
(`SEGFLOW_CONFIG_CACHE_DIR/<fingerprint>/`) and loads the config from there. So a worker needs
segflow and its settings, not the team's files; SEGFLOW_CONFIG is read only while nothing has been
pushed (the embedded default's first run) or when the last push stored no files.

If the live version cannot be loaded here (a package it imports is not installed on this machine,
say), the process logs why, once, and keeps the config it had: work that needs the pushed config
is left pending (`is_live` is false) and the schedule hands it out again later.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

from segments.models import Segment

from .config import Config, ConfigError, SegmentDef, load_config, validate_config
from .config.bundle import Bundle, load_bundle
from .models import ConfigVersion, Push

logger = logging.getLogger(__name__)

RETRY_FAILED_LOAD_SECONDS = 60.0


class LiveConfig:
    """The one answer to "which config does this process run, and is this part of it live"."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._config: Config | None = None
        self._version: str | None = None  # the bundle fingerprint of _config, if from a push
        self._pushed_fingerprint: str | None = None  # of the last push this process has seen
        self._live_version: str | None = None  # the bundle fingerprint of that push's version
        # A version that failed to load: its fingerprint, when, and why.
        self._failed: tuple[str, float, str] | None = None
        self._warned_nothing_pushed = False

    def current(self) -> Config:
        """The config this process runs: the last one loaded, else settings.SEGFLOW_CONFIG."""
        if self._config is None:
            with self._lock:
                if self._config is None:
                    self._config = load_config(settings.SEGFLOW_CONFIG)
        return self._config

    @property
    def version(self) -> str | None:
        """The fingerprint of the pushed version this process runs, if it runs one."""
        return self._version

    def set(self, config: Config | None, version: str | None = None) -> None:
        """Run `config` from now on: the files of pushed version `version` (after a push), or, in
        tests, a config of their own. None loads it again lazily."""
        with self._lock:
            self._config = config
            self._version = version if config is not None else None
            self._failed = None

    def reset(self) -> None:
        """Forget the config and the pushes seen, as a process that just started."""
        with self._lock:
            self._config = None
            self._version = self._pushed_fingerprint = self._live_version = self._failed = None
            self._warned_nothing_pushed = False

    def sync(self) -> Config:
        """The config of the live version, loaded from the database when it changed."""
        latest = (
            Push.objects.order_by("-id")
            .values_list("fingerprint", "version_id", "version__fingerprint")
            .first()
        )
        if latest is None:
            self._pushed_fingerprint = self._live_version = None
            return self._nothing_pushed()
        self._pushed_fingerprint, version_id, bundle_fingerprint = latest
        self._live_version = bundle_fingerprint
        if version_id is None or bundle_fingerprint == self._version:
            # Pushed without files (before versions were stored, or a config built in code):
            # this process runs the config it has.
            return self.current()
        with self._lock:
            if bundle_fingerprint == self._version:
                return self._config
            if self._failed is not None:
                failed, when, why = self._failed
                if failed == bundle_fingerprint and time.monotonic() - when < (
                    RETRY_FAILED_LOAD_SECONDS
                ):
                    return self._fallback(why)
            return self._load(version_id, bundle_fingerprint)

    def _load(self, version_id: int, bundle_fingerprint: str) -> Config:
        version = ConfigVersion.objects.filter(pk=version_id).first()
        try:
            if version is None:
                raise ConfigError("the version was deleted")
            config = load_bundle(
                Bundle(
                    entry=version.entry,
                    files=version.files,
                    location=version.location,
                    git_commit=version.git_commit or None,
                    git_dirty=version.git_dirty,
                )
            )
        except ConfigError as exc:
            number = version.number if version is not None else "?"
            why = f"cannot load the pushed config (version {number}) in this process: {exc}"
            self._failed = (bundle_fingerprint, time.monotonic(), why)
            logger.error(
                "%s. Work that needs it waits until it loads (tried again every %d seconds); "
                "push a config that loads on every worker, or roll back",
                why,
                RETRY_FAILED_LOAD_SECONDS,
            )
            return self._fallback(why)
        config.version = version.number
        self._config, self._version, self._failed = config, bundle_fingerprint, None
        logger.info("now running the pushed config, version %s", version.number)
        return config

    def _fallback(self, why: str) -> Config:
        """The config a process that cannot load the live version keeps: the one it had, never
        SEGFLOW_CONFIG's (its email provider and templates could be anyone's)."""
        if self._config is not None:
            return self._config
        raise ConfigError(why)

    def _nothing_pushed(self) -> Config:
        """Before the first push: SEGFLOW_CONFIG's config, or, without one, a config of nothing
        (there is nothing stored for it to act on either)."""
        try:
            return self.current()
        except ConfigError as exc:
            if not self._warned_nothing_pushed:
                self._warned_nothing_pushed = True
                logger.warning(
                    "nothing has been pushed yet, and SEGFLOW_CONFIG cannot be loaded (%s): this "
                    "process waits for a push",
                    exc,
                )
            return validate_config({}, location="<nothing pushed>")

    def is_live(self, config: Config) -> bool:
        """Whether `config` is the one last pushed (as of this process's last sync): loaded from
        the live version's files, or with the very definitions that were pushed."""
        if self._pushed_fingerprint is None or config.fingerprint == self._pushed_fingerprint:
            return True
        bundle = config.bundle
        return bundle is not None and bundle.fingerprint == self._live_version

    def segments(self, config: Config) -> list[tuple[Segment, SegmentDef]]:
        """The pushed segments that `config` has as they were pushed, with their definitions."""
        pairs = (
            (row, config.segment_as_pushed(row.name, row.fingerprint))
            for row in Segment.objects.all()
        )
        return [(row, definition) for row, definition in pairs if definition is not None]


live_config = LiveConfig()
