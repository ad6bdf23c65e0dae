"""Pushing from CI to a running server: the commands of docs/ci.md against a live server.

The stdlib-only client's command (`python -m segflow_client push`, run here as the file
clients/python/segflow_client.py with an isolated Python) and `manage.py segflow_push --server`
send the config's bundle to POST /api/push; the server validates, plans and applies it as a
local push does, and audits every attempt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from io import StringIO
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from segflow import users as user_service
from segflow.api_keys import create_api_key
from segflow.client import Client, SegflowAuthError, SegflowError, collect_bundle
from segflow.live_config import live_config
from segflow.models import ConfigVersion, Push, PushAttempt
from templates.models import EmailTemplate
from transactions.models import Transaction

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python" / "segflow_client.py"

CONFIG = """
config = {
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "transactions": {
        "receipt": {"event": "paid", "subject": "Receipt", "html": "emails/receipt.html"},
    },
}
"""


@pytest.fixture
def server(live_server, settings) -> str:
    settings.SEGFLOW_ALLOW_REMOTE_PUSH = True
    # The live server listens on 127.0.0.1; "localhost" may reach another server on ::1.
    return live_server.url.replace("://localhost:", "://127.0.0.1:")


@pytest.fixture
def push_key(db) -> str:
    return create_api_key("ci-deploy", "push")[1]


@pytest.fixture
def team(tmp_path) -> Path:
    """The team's repository checked out on the CI runner: a config and its template."""
    folder = tmp_path / "marketing"
    (folder / "emails").mkdir(parents=True)
    (folder / "segflow_config.py").write_text(textwrap.dedent(CONFIG))
    (folder / "emails" / "receipt.html").write_text("<p>Thanks for your order.</p>")
    return folder


def ci(server: str, key: str, *args: str, cwd: Path | None = None):
    """The client's command, as a CI image without segflow's server runs it: the one file, an
    isolated Python (no PYTHONPATH, not even the script's folder), no Django settings."""
    env = {"PATH": os.environ.get("PATH", ""), "SEGFLOW_PUSH_KEY": key}
    done = subprocess.run(
        [sys.executable, "-I", str(CLIENT), "push", "--server", server, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def emails_as_a_worker(settings, tmp_path, user_id: str) -> str:
    """The HTML a worker with no config file of its own sends for an event now."""
    settings.SEGFLOW_CONFIG = str(tmp_path / "no-config-here.py")
    live_config.reset()
    mail.outbox.clear()
    user_service.put_user(user_id, {"email": f"{user_id}@example.com"})
    user_service.record_event(user_id, "paid", {})
    assert len(mail.outbox) == 1, mail.outbox
    return mail.outbox[0].alternatives[0][0]


def test_dry_run_push_push_again_and_rollback_from_ci(server, push_key, team, settings, tmp_path):
    config = str(team / "segflow_config.py")

    code, out, err = ci(server, push_key, "--config", config, "--dry-run")
    assert code == 0, err
    assert f"Pushing {config} to {server} (dry run) ..." in out
    assert f"Plan for {config} (dry run: nothing was changed)" in out
    assert '+ receipt: on event "paid"' in out and "+ emails/receipt.html" in out
    assert not Push.objects.exists() and not ConfigVersion.objects.exists()
    assert not Transaction.objects.exists()

    code, out, err = ci(server, push_key, "--config", config)
    assert code == 0, err
    assert f"Plan for {config}\n" in out and "Pushed. Version 1 is live." in out
    assert emails_as_a_worker(settings, tmp_path, "ann").startswith("<p>Thanks for your order.")

    code, out, err = ci(server, push_key, "--config", config)
    assert code == 0, err
    assert f"Nothing to change: what is stored already matches {config}." in out
    assert ConfigVersion.objects.count() == 1 and Push.objects.count() == 1

    (team / "emails" / "receipt.html").write_text("<p>Your order is on its way.</p>")
    code, out, err = ci(server, push_key, "--config", config)
    assert code == 0, err
    assert "~ receipt" in out and "~ emails/receipt.html" in out
    assert "Pushed. Version 2 is live." in out
    assert "on its way" in emails_as_a_worker(settings, tmp_path, "bob")

    code, out, err = ci(server, push_key, "--rollback", "--dry-run")
    assert code == 0, err
    assert f"Plan for rolling back to version 1 ({config}) (dry run" in out
    assert Push.objects.first().version.number == 2

    code, out, err = ci(server, push_key, "--rollback")
    assert code == 0, err
    assert "Rolling back to the previous version on" in out
    assert "~ emails/receipt.html" in out and "Rolled back. Version 1 is live again." in out
    assert "Thanks for your order" in emails_as_a_worker(settings, tmp_path, "cy")
    assert ConfigVersion.objects.count() == 2  # a rollback makes no new version

    audit = list(PushAttempt.objects.order_by("id").values_list("action", "dry_run", "result"))
    assert audit == [
        ("push", True, "dry run"),
        ("push", False, "applied"),
        ("push", False, "unchanged"),
        ("push", False, "applied"),
        ("rollback", True, "dry run"),
        ("rollback", False, "applied"),
    ]
    last = PushAttempt.objects.order_by("-id").first()
    assert (last.actor, last.via, last.client_ip, last.version_number) == (
        "key ci-deploy",
        "http",
        "127.0.0.1",
        1,
    )
    assert Push.objects.first().pushed_by == "key ci-deploy"


def test_an_ingest_key_cannot_push_and_a_push_key_cannot_ingest(server, push_key, team):
    _, ingest_key = create_api_key("backend")
    code, out, err = ci(server, ingest_key, "--config", str(team / "segflow_config.py"))
    assert code == 1
    assert "scope 'ingest'" in err and "needs a key of the scope 'push'" in err
    assert not Push.objects.exists()
    refused = PushAttempt.objects.get()
    assert (refused.result, refused.actor, refused.client_ip) == (
        "refused",
        "key backend",
        "127.0.0.1",
    )

    with pytest.raises(SegflowAuthError, match="scope 'push'.*needs a key of the scope 'ingest'"):
        Client(server, push_key).create_user("ann", {"email": "ann@example.com"})


def test_remote_pushes_are_refused_unless_the_server_allows_them(server, push_key, team, settings):
    settings.SEGFLOW_ALLOW_REMOTE_PUSH = False
    code, out, err = ci(server, push_key, "--config", str(team / "segflow_config.py"))
    assert code == 1
    assert "remote pushes are turned off on this server" in err
    assert "SEGFLOW_ALLOW_REMOTE_PUSH=1" in err
    assert not Push.objects.exists() and not EmailTemplate.objects.exists()
    assert PushAttempt.objects.get().result == "refused"

    code, out, err = ci(server, push_key, "--rollback")
    assert code == 1 and "remote pushes are turned off" in err


def test_a_bad_or_missing_key_is_refused_and_audited(server, team):
    code, out, err = ci(server, "sf_not-a-key", "--config", str(team / "segflow_config.py"))
    assert code == 1 and "unknown or revoked API key" in err
    assert PushAttempt.objects.get().actor == "no valid key"
    done = subprocess.run(
        [sys.executable, "-I", str(CLIENT), "push", "--server", server],
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "set SEGFLOW_PUSH_KEY" in done.stderr


BROKEN = {
    "an error while importing": (
        "import os\n\nsubject = 1 / 0\n",
        "ZeroDivisionError('division by zero') ({folder}segflow_config.py, line 3)",
    ),
    "a missing template file": (
        CONFIG.replace("emails/receipt.html", "emails/reciept.html"),
        "transactions.receipt.html: template file 'emails/reciept.html' does not exist "
        "(looked for {folder}emails/reciept.html",
    ),
    "a template that does not compile": (
        CONFIG,
        "Nothing was pushed: transactions.receipt: 'receipt' does not compile: Unclosed tag",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_the_server_names_the_problem_file_and_line_as_a_local_push_does(
    server, push_key, team, case
):
    source, expected = BROKEN[case]
    (team / "segflow_config.py").write_text(source)
    if case == "a template that does not compile":
        (team / "emails" / "receipt.html").write_text("{% if user.name %}Hi")
    config = str(team / "segflow_config.py")
    with pytest.raises(CommandError) as local:
        call_command("segflow_push", "--config", config)
    code, out, err = ci(server, push_key, "--config", config)
    assert code == 1
    assert err.strip() == f"error: {local.value}"  # the very same message
    assert expected.format(folder=f"{team}/") in err
    # From the repository's root, as CI runs it, files are named as the runner sees them.
    code, out, err = ci(
        server, push_key, "--config", "marketing/segflow_config.py", cwd=team.parent
    )
    assert code == 1 and expected.format(folder="marketing/") in err
    assert not Push.objects.exists()
    assert set(PushAttempt.objects.values_list("result", flat=True)) == {"failed"}


def test_the_bundle_size_is_limited(server, push_key, team, settings):
    settings.SEGFLOW_PUSH_MAX_BYTES = 1000
    (team / "emails" / "big.html").write_text("x" * 2500)
    client = Client(server, push_key)
    with pytest.raises(SegflowError, match="over the limit of 1000 .SEGFLOW_PUSH_MAX_BYTES."):
        client.push(collect_bundle(str(team / "segflow_config.py")))
    settings.SEGFLOW_PUSH_MAX_BODY_BYTES = 2000
    with pytest.raises(SegflowError, match="failed with 413: body: larger than the limit of 2000"):
        client.push(collect_bundle(str(team / "segflow_config.py")))
    assert list(PushAttempt.objects.values_list("result", flat=True)) == ["refused", "refused"]
    # A local push keeps to the same limit.
    with pytest.raises(CommandError, match="more than 1000 bytes"):
        call_command("segflow_push", "--config", str(team / "segflow_config.py"))


def test_a_tampered_or_odd_bundle_is_refused_naming_the_field(server, push_key, team):
    client = Client(server, push_key)
    bundle = collect_bundle(str(team / "segflow_config.py"))
    for change, message in (
        ({"files": {**bundle["files"], "../evil.py": "x = 1"}}, "bundle.files: '../evil.py'"),
        ({"files": {**bundle["files"], ".env.py": ""}}, "bundle.files: '.env.py'"),
        ({"entry": "emails/receipt.html"}, "bundle.entry: must name the config module"),
        ({"fingerprint": "0" * 64}, "bundle.fingerprint: does not match the files sent"),
        ({"git_commit": "; rm -rf /"}, "bundle.git_commit: must be a commit id"),
    ):
        with pytest.raises(SegflowError, match=message.replace(".", r"\.")):
            client.push({**bundle, **change})
    assert not ConfigVersion.objects.exists()


def test_manage_py_push_with_server_prints_what_the_client_prints(
    server, push_key, team, monkeypatch
):
    monkeypatch.setenv("SEGFLOW_PUSH_KEY", push_key)
    config = str(team / "segflow_config.py")
    out = StringIO()
    call_command("segflow_push", "--server", server, "--config", config, "--dry-run", stdout=out)
    code, ci_out, err = ci(server, push_key, "--config", config, "--dry-run")
    assert out.getvalue() == ci_out
    out = StringIO()
    call_command("segflow_push", "--server", server, "--config", config, stdout=out)
    assert "Pushed. Version 1 is live." in out.getvalue()
    monkeypatch.delenv("SEGFLOW_PUSH_KEY")
    with pytest.raises(CommandError, match="Set SEGFLOW_PUSH_KEY"):
        call_command("segflow_push", "--server", server, "--config", config)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_push_records_the_commit_of_the_work_tree_and_whether_it_was_dirty(
    server, push_key, team
):
    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args],
            cwd=team,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "config")
    head = git("rev-parse", "HEAD")
    config = str(team / "segflow_config.py")
    code, out, err = ci(server, push_key, "--config", config)
    assert code == 0, err
    assert f"Pushed. Version 1 is live (commit {head[:12]})." in out
    version = ConfigVersion.objects.get()
    assert (version.git_commit, version.git_dirty, version.pushed_by) == (
        head,
        False,
        "key ci-deploy",
    )
    (team / "emails" / "receipt.html").write_text("<p>Edited on the runner.</p>")
    code, out, err = ci(server, push_key, "--config", config)
    assert f"(commit {head[:12]}, with changes not committed)" in out
    assert PushAttempt.objects.order_by("-id").first().git_dirty is True
