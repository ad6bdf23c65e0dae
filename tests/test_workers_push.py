"""Pushing from CI to a running production deployment, for real: granian, two Celery workers and
beat on MariaDB and Redis, started with no config file at all.

The config reaches them only through the database: a remote push (the stdlib client's command,
as a CI runner has it) introduces a campaign and its emails go out; a second push changes a
template and the next email uses it; a rollback restores the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .deployment import ROOT, Deployment

pytestmark = [pytest.mark.mysql_only, pytest.mark.redis]

CONFIG = """
from segflow.config import SegflowConfig


def welcome(ctx, rt):
    yield rt.send_email("welcome")


config: SegflowConfig = {
    "templates": {"welcome": {"subject": "Welcome", "html": "emails/welcome.html"}},
    "segments": {
        "trial": {"sql": "SELECT u.id FROM users u "
                         "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'trial'"},
    },
    "campaigns": {"welcome": {"segments": ["trial"], "behavior": "static", "flow": welcome}},
}
"""
TEMPLATE = '{% extends "emails/base.html" %}{% block body %}<p>{{ words }}</p>{% endblock %}'
BASE = "<html><body>{% block body %}{% endblock %}</body></html>"


@pytest.fixture
def deployment(tmp_path):
    nowhere = tmp_path / "no-config-on-the-workers" / "segflow_config.py"
    deployment = Deployment(
        tmp_path,
        "config = {}",
        env={
            "SEGFLOW_CONFIG": str(nowhere),  # every process starts with no config file at all
            "SEGFLOW_ALLOW_REMOTE_PUSH": "1",
            "SEGFLOW_CONFIG_CACHE_DIR": str(tmp_path / "config-cache"),
        },
    )
    (tmp_path / "segflow_config.py").unlink()  # not even the harness's
    try:
        yield deployment
    finally:
        deployment.down()


def ci_push(deployment: Deployment, key: str, *args: str) -> str:
    """The CI job: the client's one file, an isolated Python, the key in the environment."""
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            str(ROOT / "clients" / "python" / "segflow_client.py"),
            "push",
            "--server",
            f"http://127.0.0.1:{deployment.port}",
            *args,
        ],
        cwd=deployment.tmp,
        env={"PATH": os.environ.get("PATH", ""), "SEGFLOW_PUSH_KEY": key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr + deployment.report("u")
    return done.stdout


def body_sent_to(deployment: Deployment, user_id: str, timeout: float = 90) -> str:
    """The one email the file backend wrote for the user, once it has."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            message
            for path in deployment.mail_dir.iterdir()
            for message in path.read_text().split("-" * 79)
            if f"To: {user_id}@example.com" in message
        ]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"no email for {user_id}\n" + deployment.report("u")
        time.sleep(0.5)


def write_team_config(folder: Path, words: str) -> str:
    (folder / "emails").mkdir(parents=True, exist_ok=True)
    (folder / "segflow_config.py").write_text(textwrap.dedent(CONFIG))
    (folder / "emails" / "base.html").write_text(BASE)
    (folder / "emails" / "welcome.html").write_text(TEMPLATE.replace("{{ words }}", words))
    return "team/segflow_config.py"  # as the CI job names it, from the repository's root


def test_workers_with_no_config_file_run_what_ci_pushes_and_rolls_back(deployment):
    client = deployment.up(push=False)
    key = deployment.manage("segflow_create_api_key", "ci", "--scope", "push").split()[-1]
    for user_id in ("u-1", "u-2"):  # users who are there before the campaign
        client.create_user(user_id, {"email": f"{user_id}@example.com", "plan": "trial"})
    team = deployment.tmp / "team"

    plan = ci_push(deployment, key, "--config", write_team_config(team, "Hello from version one"))
    assert "+ welcome: static, 2 user(s) enter" in plan and "Pushed. Version 1 is live." in plan
    for user_id in ("u-1", "u-2"):
        assert "Hello from version one" in body_sent_to(deployment, user_id)

    plan = ci_push(deployment, key, "--config", write_team_config(team, "Hello from version two"))
    assert "~ emails/welcome.html" in plan and "Pushed. Version 2 is live." in plan
    client.create_user("u-3", {"email": "u-3@example.com", "plan": "trial"})
    assert "Hello from version two" in body_sent_to(deployment, "u-3")

    plan = ci_push(deployment, key, "--rollback")
    assert "Rolled back. Version 1 is live again." in plan
    client.create_user("u-4", {"email": "u-4@example.com", "plan": "trial"})
    assert "Hello from version one" in body_sent_to(deployment, "u-4")

    rows = deployment.query("SELECT status, COUNT(*) FROM outbox GROUP BY status")
    assert rows == [("sent", 4)], rows
    # Each process loaded the versions from the database into the cache, never from a file.
    cached = {p.name for p in (deployment.tmp / "config-cache").iterdir() if p.is_dir()}
    fingerprints = {f for (f,) in deployment.query("SELECT fingerprint FROM config_versions")}
    assert fingerprints <= cached
