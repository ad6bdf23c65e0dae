"""The docs say what a user sees: commands that work as written, paths that are nobody's own, and
facts about the repository that are still true."""

import re
from pathlib import Path

import pytest
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", ROOT / "clients" / "python" / "README.md"])
DOCS += sorted((ROOT / "docs").glob("*.md"))


def lines():
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            yield f"{path.relative_to(ROOT)}:{number}", line


def test_sample_output_shows_no_developers_paths():
    # A developer's checkout or home; /srv/segflow/... is the neutral place.
    personal = re.compile(r"(?<![\w.])/(?:work|home|root|Users|tmp/pytest-of-\w+)/")
    assert [where for where, line in lines() if personal.search(line)] == []


def test_manage_py_is_run_with_the_virtual_environments_python():
    # Only .venv/bin/python has the dependencies; inside the image (docker compose run) `python`
    # is the right one.
    bare = re.compile(r"(?<![\w/.])python3? manage\.py")
    found = [where for where, line in lines() if bare.search(line) and "docker" not in line]
    assert found == []


def test_the_manage_py_help_sections_are_the_ones_the_docs_name():
    text = (ROOT / "docs" / "commands.md").read_text()
    listed = re.search(r"under `\[segflow\]`\s*\(([^)]*)\)", text)
    assert listed, "docs/commands.md lists the commands under [segflow] in manage.py help"
    segflow_app = sorted(name for name, app in get_commands().items() if app == "segflow")
    assert sorted(re.findall(r"`(\w+)`", listed[1])) == segflow_app
    for name, app in get_commands().items():
        if name.startswith("segflow_") and app != "segflow":
            assert re.search(rf"`{name}`[^.]*listed under `\[{app}\]`", text), name


@pytest.mark.parametrize(
    "claim, false_if",
    [
        ("no `.dockerignore`", lambda: (ROOT / ".dockerignore").exists()),
        (
            "does not set `DEBUG`",
            lambda: re.search(r"^\s+DEBUG:", (ROOT / "compose.yaml").read_text(), re.M),
        ),
    ],
)
def test_no_claim_about_the_repository_that_is_no_longer_true(claim, false_if):
    if false_if():
        assert [where for where, line in lines() if claim in line] == []
