"""The embedded runner: a ticker thread that does beat's work inside the web process."""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

from .pipeline import tick

logger = logging.getLogger(__name__)


class Ticker(threading.Thread):
    """Runs `pipeline.tick` every `interval` seconds until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="segflow-ticker", daemon=True)
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        logger.info("segflow ticker running every %ss", self.interval)
        while not self._stop_event.wait(self.interval):
            close_old_connections()
            try:
                report = tick()
            except Exception:
                logger.exception("tick failed; trying again in %ss", self.interval)
                continue
            if report.refreshed_segments or report.cursors_started or report.swept:
                logger.info("tick: %s", report)
        close_old_connections()

    def stop(self) -> None:
        self._stop_event.set()
