"""What the checks of a config's code found, each pinned to a file and line.

The checks themselves belong to what they check (a flow's steps to `campaigns.checks`, email
templates to `templates.checks`); a push gathers their findings, refuses on an error and shows
the warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    """One problem: `path:line: message`. A warning does not stop a push."""

    path: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def shown_path(file: str | Path, base_dir: Path) -> str:
    """A file as its config's author knows it: relative to the config's folder when inside it
    (a pushed version is loaded from a cache folder, whose name means nothing to them)."""
    path = Path(file)
    try:
        return path.resolve().relative_to(base_dir.resolve()).as_posix()
    except ValueError:
        return str(file)


def unique(findings: list[Finding]) -> list[Finding]:
    """Each finding once (a helper shared by two flows is read twice), in file and line order."""
    return sorted(set(findings), key=lambda f: (f.path, f.line, f.message))
