"""The layers hold: imports point down (edges -> orchestration -> domain -> kernel), with no
import circle among files. The contracts are in pyproject.toml; `lint-imports` checks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["segflow", "campaigns", "segments", "transactions", "delivery", "templates"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def scratch_copy(tmp_path: Path) -> Path:
    """The packages and the contracts, copied where a test may break them."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_an_upward_import_breaks_the_layers(scratch_copy: Path):
    # A domain app reaching up into the orchestration layer.
    add_line(scratch_copy / "segments" / "services.py", "from segflow import pipeline  # noqa")
    result = lint_imports(scratch_copy)
    assert result.returncode != 0
    assert "Edges -> orchestration -> domain -> kernel BROKEN" in result.stdout
    assert "segments.services -> segflow.pipeline" in result.stdout


def test_an_import_circle_breaks_the_contracts(scratch_copy: Path):
    # The replay core importing the runner, which imports it.
    add_line(scratch_copy / "campaigns" / "flow.py", "from campaigns import runner  # noqa")
    result = lint_imports(scratch_copy)
    assert result.returncode != 0
    assert "No import circle among the modules of any package BROKEN" in result.stdout


def test_the_flow_engine_stays_free_of_django(scratch_copy: Path):
    add_line(scratch_copy / "campaigns" / "steps.py", "import django.db  # noqa")
    result = lint_imports(scratch_copy)
    assert result.returncode != 0
    assert "The flow engine's replay core is plain Python BROKEN" in result.stdout


def test_every_name_the_architecture_page_gives_exists():
    import importlib
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    names = set(
        re.findall(
            r"`((?:segflow|campaigns|segments|transactions|delivery|templates)\.[\w.]+)", text
        )
    )
    assert len(names) > 20
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attribute in parts[cut:]:
                    target = getattr(target, attribute)
            except AttributeError:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, f"docs/architecture.md names what the code does not have: {missing}"
