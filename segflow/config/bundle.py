"""A config as files: bundled from its folder, checked, written to a cache folder and loaded.

A push stores the bundle in the database (`segflow.models.ConfigVersion`), and every process
runs the version last pushed: it writes the bundle's files to a folder of the local cache
(`SEGFLOW_CONFIG_CACHE_DIR/<fingerprint>/`, once per machine) and loads the config from there with
`load_config`. So a worker needs segflow and its settings, never a copy of the team's files.

Which files a bundle holds is decided by `segflow.client.collect_bundle` (the config's folder:
every .py, .html, .htm, .txt and .css file under it), which the standard-library client shares,
so a push from CI carries exactly what a local push does.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from ..client import (
    BUNDLE_MAX_FILES,
    BUNDLE_SUFFIXES,
    SegflowBundleError,
    bundle_fingerprint,
    collect_bundle,
    config_file,
)
from .definitions import Config, ConfigError
from .loading import config_module_name, load_config

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
_SKIPPED_PARTS = {"__pycache__", "node_modules", "site-packages"}
_COMMIT = re.compile(r"^[0-9a-f]{4,64}$")
_BUNDLE_KEYS = {"location", "entry", "files", "fingerprint", "git_commit", "git_dirty"}


@dataclass(frozen=True)
class Bundle:
    """The files of one config: `entry` is the config module's file name, `files` maps each
    file's path (relative to the config's folder, with `/`) to its text."""

    entry: str
    files: dict[str, str]
    location: str = ""  # where it was bundled from, as given to the push
    git_commit: str | None = None
    git_dirty: bool | None = None

    @cached_property
    def fingerprint(self) -> str:
        return bundle_fingerprint(self.entry, self.files)

    @cached_property
    def size(self) -> int:
        return sum(len(text.encode("utf-8")) for text in self.files.values())

    def as_payload(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "entry": self.entry,
            "files": self.files,
            "fingerprint": self.fingerprint,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
        }


def max_bytes() -> int:
    """settings.SEGFLOW_PUSH_MAX_BYTES: the largest bundle a push may carry."""
    from django.conf import settings

    if settings.configured:
        return int(getattr(settings, "SEGFLOW_PUSH_MAX_BYTES", DEFAULT_MAX_BYTES))
    return DEFAULT_MAX_BYTES


def bundle_from_location(location: str) -> Bundle:
    """Bundle the config at `location` (a .py path or a dotted module) on this machine."""
    try:
        data = collect_bundle(location, max_bytes=max_bytes())
    except SegflowBundleError as exc:
        raise ConfigError(str(exc)) from exc
    return Bundle(
        entry=data["entry"],
        files=data["files"],
        location=location,
        git_commit=data["git_commit"],
        git_dirty=data["git_dirty"],
    )


def folder_of(location: str) -> Path:
    """The folder of the config at `location` on this machine, as its error messages name it."""
    try:
        return config_file(location).parent
    except SegflowBundleError as exc:
        raise ConfigError(str(exc)) from exc


def bundle_from_payload(data: Any) -> Bundle:
    """A bundle sent over HTTP (`segflow.client.collect_bundle`'s dict), checked: every problem
    is a ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError("bundle: must be an object with `entry` and `files`")
    unknown = set(data) - _BUNDLE_KEYS
    if unknown:
        raise ConfigError(
            f"bundle: unknown key {', '.join(repr(k) for k in sorted(unknown))}; expected "
            f"{', '.join(sorted(_BUNDLE_KEYS))}"
        )
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ConfigError("bundle.files: must be an object of file paths to their text")
    if len(files) > BUNDLE_MAX_FILES:
        raise ConfigError(f"bundle.files: more than {BUNDLE_MAX_FILES} files")
    for path, text in files.items():
        _check_path(path)
        if not isinstance(text, str):
            raise ConfigError(f"bundle.files.{path}: must be the file's text, a string")
    entry = data.get("entry")
    if (
        not isinstance(entry, str)
        or "/" in entry
        or entry not in files
        or not entry.endswith(".py")
    ):
        raise ConfigError(
            "bundle.entry: must name the config module, a .py file at the top of `files`, "
            f"got {entry!r}"
        )
    location = data.get("location") or entry
    if not isinstance(location, str) or len(location) > 1000:
        raise ConfigError("bundle.location: must be a string of at most 1000 characters")
    commit = data.get("git_commit")
    if commit is not None and (not isinstance(commit, str) or not _COMMIT.match(commit)):
        raise ConfigError(f"bundle.git_commit: must be a commit id in hex or null, got {commit!r}")
    dirty = data.get("git_dirty")
    if dirty is not None and not isinstance(dirty, bool):
        raise ConfigError(f"bundle.git_dirty: must be true, false or null, got {dirty!r}")
    bundle = Bundle(
        entry=entry, files=dict(files), location=location, git_commit=commit, git_dirty=dirty
    )
    sent = data.get("fingerprint")
    if sent is not None and sent != bundle.fingerprint:
        raise ConfigError(
            "bundle.fingerprint: does not match the files sent (the bundle was changed on its "
            "way, or made by another version of the client)"
        )
    check_size(bundle)
    return bundle


def check_size(bundle: Bundle) -> None:
    limit = max_bytes()
    if bundle.size > limit:
        raise ConfigError(
            f"bundle: its files come to {bundle.size} bytes, over the limit of {limit} "
            "(SEGFLOW_PUSH_MAX_BYTES); keep the config and its templates in a folder of their own"
        )


def _check_path(path: Any) -> None:
    parts = path.split("/") if isinstance(path, str) else []
    if (
        not parts
        or len(path) > 500
        or any(ord(c) < 32 or c == "\\" for c in path)
        or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
        or any(part in _SKIPPED_PARTS for part in parts)
        or not path.endswith(BUNDLE_SUFFIXES)
    ):
        raise ConfigError(
            f"bundle.files: {path!r} is not a file a bundle holds (a relative path with `/`, "
            f"no hidden or `..` parts, ending in {', '.join(BUNDLE_SUFFIXES)})"
        )


# ---------------------------------------------------------------------------------------------
# The local cache of bundles, one folder per fingerprint.


def cache_root() -> Path:
    """settings.SEGFLOW_CONFIG_CACHE_DIR, or a folder in the system's temporary folder."""
    from django.conf import settings

    configured = getattr(settings, "SEGFLOW_CONFIG_CACHE_DIR", "") if settings.configured else ""
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "segflow-config-cache"


def materialise(bundle: Bundle, root: Path | None = None) -> Path:
    """The folder holding the bundle's files, written once (atomically) under `root`."""
    root = root or cache_root()
    target = root / bundle.fingerprint
    if (target / bundle.entry).is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{bundle.fingerprint[:16]}-", dir=root))
        try:
            staging.chmod(0o755)  # as a folder made the usual way: readable by the other processes
            for relative, text in bundle.files.items():
                file = staging / PurePosixPath(relative)
                file.parent.mkdir(parents=True, exist_ok=True)
                with open(file, "w", encoding="utf-8", newline="") as out:
                    out.write(text)
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / bundle.entry).is_file():  # not another process's copy: an error
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ConfigError(
            f"config: cannot write the pushed config's files to {root}: {exc}; set "
            "SEGFLOW_CONFIG_CACHE_DIR to a folder this process can write to"
        ) from exc
    _prune_cache(root, keep=target)
    return target


def _prune_cache(root: Path, keep: Path, newest: int = 20, older_than: float = 3600) -> None:
    """Remove all but the `newest` cached versions, leaving anything touched in the last hour."""
    try:
        folders = sorted(
            (p for p in root.iterdir() if p.is_dir() and p != keep),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        return
    now = time.time()
    stale = [p for p in folders if p.name.startswith(".")] + [
        p for p in folders if not p.name.startswith(".")
    ][newest:]
    for folder in stale:
        try:
            if now - folder.stat().st_mtime > older_than:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def load_bundle(bundle: Bundle, *, shown_as: str | None = None, root: Path | None = None) -> Config:
    """Load the config of `bundle` from its cache folder (under `root`, else the cache).

    Errors name the files as `shown_as` (the folder the bundle came from) instead of the cache
    folder, so a remote push reports the same problem, file and line as a local one. The
    config's `location` is the bundle's.
    """
    folder = materialise(bundle, root)
    try:
        config = load_config(str(folder / bundle.entry))
    except ConfigError as exc:
        raise ConfigError(_shown(str(exc), folder, shown_as, bundle)) from exc
    finally:
        # Its functions keep what they need; a long-running process loads many versions (and
        # dry runs), which must not pile up in sys.modules.
        sys.modules.pop(config_module_name((folder / bundle.entry).resolve()), None)
    config.location = bundle.location or bundle.entry
    config.bundle = bundle
    return config


def _shown(message: str, folder: Path, shown_as: str | None, bundle: Bundle) -> str:
    if shown_as is None:
        location = bundle.location or bundle.entry
        shown_as = str(PurePosixPath(location).parent) if location.endswith(".py") else ""
    shown_as = "" if shown_as == "." else shown_as.rstrip("/")
    for path in dict.fromkeys([str(folder.resolve()), str(folder)]):
        message = message.replace(path + "/", f"{shown_as}/" if shown_as else "")
        message = message.replace(path, shown_as or ".")
    return message
