"""Pushed versions as the runner needs them: an older version's config, and a version described.

A cursor a push left on the old flow (`on_change="keep_old"`) runs the flow of the version it
is pinned to (`Cursor.pinned_version`), not the live one: `config_of` loads that version's files
from the database the way `segflow.live_config` loads the live one, once per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .config import Config, ConfigError
from .config.bundle import Bundle, load_bundle
from .models import ConfigVersion, PushAttempt

# Loaded versions kept per process: cursors pinned to old flows rarely span more than a few.
CACHED_VERSIONS = 8

_lock = threading.Lock()
_loaded: OrderedDict[tuple[int, str], Config] = OrderedDict()


def config_of(number: int) -> Config:
    """The config of stored version `number`, loaded once per process. Raises ConfigError when
    the version is gone or does not load here."""
    row = (
        ConfigVersion.objects.filter(number=number)
        .values_list("fingerprint", "entry", "location", "git_commit", "git_dirty")
        .first()
    )
    if row is None:
        raise ConfigError(f"version {number} is no longer stored")
    fingerprint, entry, location, git_commit, git_dirty = row
    key = (number, fingerprint)
    with _lock:
        config = _loaded.get(key)
        if config is not None:
            _loaded.move_to_end(key)
            return config
    files = ConfigVersion.objects.values_list("files", flat=True).get(number=number)
    config = load_bundle(
        Bundle(
            entry=entry,
            files=files,
            location=location,
            git_commit=git_commit or None,
            git_dirty=git_dirty,
        )
    )
    config.version = number
    with _lock:
        _loaded[key] = config
        while len(_loaded) > CACHED_VERSIONS:
            _loaded.popitem(last=False)
    return config


def forget_loaded() -> None:
    """Drop the loaded versions (tests, as a process that just started)."""
    with _lock:
        _loaded.clear()


def describe(number: int | None) -> str:
    """`version 7 (commit 1a2b3c4d5e6f)` for people: the commit from the stored version, or,
    once it was pruned, from the audit of the push that made it."""
    if number is None:
        return "not recorded (made before versions were, or by a config not pushed as files)"
    commit, dirty = (
        ConfigVersion.objects.filter(number=number).values_list("git_commit", "git_dirty").first()
        or PushAttempt.objects.filter(version_number=number, dry_run=False)
        .exclude(git_commit="")
        .order_by("id")
        .values_list("git_commit", "git_dirty")
        .first()
        or ("", None)
    )
    if not commit:
        return f"version {number}"
    dirty_note = ", with changes not committed" if dirty else ""
    return f"version {number} (commit {commit[:12]}{dirty_note})"
