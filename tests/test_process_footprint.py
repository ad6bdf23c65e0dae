"""Libraries that only some work needs are imported by the first process that does it.

Every web and worker process loads the settings, the apps and the URLconf (the workers for
their system checks and for unsubscribe links). What they import at that point is paid for in
every process, several times over: the benchmark's deployment runs six of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# No database here: the SQLite pass of `python3 dev.py test` runs these; the MySQL one need not.
pytestmark = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("mysql"), reason="uses no database"
)

# Each is megabytes a process: boto3 and cryptography's x509 serve only the SES webhook and
# sending through SES; css_inline, inscriptis and lxml only the processes that render emails.
ON_FIRST_USE = ("boto3", "cryptography.x509", "css_inline", "inscriptis", "lxml")


def loaded_after(script: str, tmp_path: Path) -> list[str]:
    probe = (
        "import json, sys, django\n"
        "django.setup()\n"
        f"{script}\n"
        f"print(json.dumps(sorted(m for m in {ON_FIRST_USE!r} if m in sys.modules)))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SEGFLOW_"))},
        "DJANGO_SETTINGS_MODULE": "segflow_project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_started_process_has_not_loaded_what_only_some_work_needs(tmp_path):
    started = (
        "import segflow_project.urls, segflow.tasks\n"
        "from django.core.checks import run_checks\n"
        "run_checks()\n"
        "from django.urls import reverse\n"
        "reverse('admin:index')"
    )
    assert loaded_after(started, tmp_path) == []


def test_rendering_an_email_loads_its_libraries_and_uses_them(tmp_path):
    rendered = (
        "from templates.rendering import html_to_text, inline_css\n"
        "html = inline_css('<style>p { color: red }</style><p>Hi <a href=\"https://x.test\">you</a></p>')\n"
        "assert 'style=\"color: red' in html, html\n"
        "assert html_to_text(html) == 'Hi [you](https://x.test)', html_to_text(html)"
    )
    assert loaded_after(rendered, tmp_path) == ["css_inline", "inscriptis", "lxml"]
