"""A push stores the config's files as a numbered version: what a bundle holds, the history and
audit of pushes in the admin, rollbacks, and key scopes."""

from __future__ import annotations

import textwrap
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from rest_framework.test import APIClient

from segflow.api_keys import create_api_key
from segflow.client import SegflowBundleError, collect_bundle
from segflow.config import ConfigError, bundle_from_location, load_bundle
from segflow.models import ApiKey, ConfigVersion, Push, PushAttempt
from templates.models import EmailTemplate

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from helpers import SUBJECT

config = {
    "templates": {"hello": {"subject": SUBJECT, "html": "emails/hello.html"}},
}
"""


@pytest.fixture
def team(tmp_path) -> Path:
    folder = tmp_path / "team"
    (folder / "emails" / "partials").mkdir(parents=True)
    (folder / "segflow_config.py").write_text(textwrap.dedent(CONFIG))
    (folder / "helpers.py").write_text('SUBJECT = "Hello"\n')
    (folder / "emails" / "hello.html").write_text(
        '{% include "emails/partials/footer.html" %}<p>hi</p>'
    )
    (folder / "emails" / "partials" / "footer.html").write_text("<p>Acme</p>")
    (folder / "emails" / "style.css").write_text("p { color: red; }")
    (folder / "emails" / "hello.txt").write_text("hi")
    return folder


def push(location: str, *args: str) -> str:
    out = StringIO()
    call_command("segflow_push", "--config", location, *args, stdout=out)
    return out.getvalue()


def test_a_bundle_is_the_text_files_under_the_configs_folder(team):
    for left_out in (
        ".env",
        ".secret.py",
        ".git/config.py",
        "__pycache__/helpers.cpython-312.pyc",
        "__pycache__/x.py",
        "node_modules/lib.js",
        "node_modules/x.py",
        "venv/pyvenv.cfg",
        "venv/lib/site.py",
        "data.json",
        "logo.png",
        "notes.md",
    ):
        (team / left_out).parent.mkdir(parents=True, exist_ok=True)
        (team / left_out).write_text("left out")
    bundle = collect_bundle(str(team / "segflow_config.py"))
    assert bundle["entry"] == "segflow_config.py"
    assert sorted(bundle["files"]) == [
        "emails/hello.html",
        "emails/hello.txt",
        "emails/partials/footer.html",
        "emails/style.css",
        "helpers.py",
        "segflow_config.py",
    ]
    assert bundle["location"] == str(team / "segflow_config.py")
    again = collect_bundle(str(team / "segflow_config.py"))
    assert again["fingerprint"] == bundle["fingerprint"]
    (team / "emails" / "partials" / "footer.html").write_text("<p>Acme Inc</p>")
    assert collect_bundle(str(team / "segflow_config.py"))["fingerprint"] != bundle["fingerprint"]


def test_what_cannot_be_bundled_is_said_before_anything_is_sent(team, tmp_path):
    with pytest.raises(SegflowBundleError, match="config: no file at .*/nope.py"):
        collect_bundle(str(tmp_path / "nope.py"))
    with pytest.raises(SegflowBundleError, match="No module named 'no_such_module_here'"):
        collect_bundle("no_such_module_here")
    (team / "emails" / "latin1.html").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(SegflowBundleError, match="latin1.html is not UTF-8 text"):
        collect_bundle(str(team / "segflow_config.py"))
    (team / "emails" / "latin1.html").unlink()
    with pytest.raises(SegflowBundleError, match="more than 100 bytes .* a folder of their own"):
        collect_bundle(str(team / "segflow_config.py"), max_bytes=100)


def test_a_bundle_loads_anywhere_with_its_helpers_and_templates(team, tmp_path):
    bundle = bundle_from_location(str(team / "segflow_config.py"))
    config = load_bundle(bundle, root=tmp_path / "cache")
    assert config.base_dir == tmp_path / "cache" / bundle.fingerprint
    assert config.templates["hello"].subject == "Hello"
    assert config.location == str(team / "segflow_config.py")
    # A second version's helper is imported afresh, not taken from the first's.
    (team / "helpers.py").write_text('SUBJECT = "Hello again"\n')
    second = load_bundle(bundle_from_location(str(team / "segflow_config.py")), root=tmp_path)
    assert second.templates["hello"].subject == "Hello again"
    assert load_bundle(bundle, root=tmp_path / "cache").templates["hello"].subject == "Hello"


def test_a_config_that_needs_more_than_its_bundle_is_refused_and_says_why(team, settings):
    (team / "subject.json").write_text('"Hello"')
    (team / "segflow_config.py").write_text(
        "import json, pathlib\n"
        "SUBJECT = json.loads((pathlib.Path(__file__).parent / 'subject.json').read_text())\n"
        'config = {"templates": {"hello": {"subject": SUBJECT, "html": "emails/hello.html"}}}\n'
    )
    with pytest.raises(CommandError) as error:
        push(str(team / "segflow_config.py"))
    message = str(error.value)
    assert "loads where it is but not from what a push stores (the .py, .html" in message
    assert "FileNotFoundError" in message and "line 2" in message
    assert not EmailTemplate.objects.exists() and not ConfigVersion.objects.exists()


def test_each_push_is_a_version_with_its_files_commit_and_who_pushed_it(team):
    output = push(str(team / "segflow_config.py"))
    assert "Files\n  + emails/hello.html\n  + emails/hello.txt" in output
    assert "Pushed. Version 1 is live." in output
    version = ConfigVersion.objects.get()
    assert version.files["helpers.py"] == 'SUBJECT = "Hello"\n'
    assert (version.number, version.entry, version.location) == (
        1,
        "segflow_config.py",
        str(team / "segflow_config.py"),
    )
    assert "@" in version.pushed_by  # the local user, at this host
    assert version.size == sum(len(t.encode()) for t in version.files.values())
    push_row = Push.objects.get()
    assert push_row.version == version and push_row.pushed_by == version.pushed_by
    attempt = PushAttempt.objects.get()
    assert (attempt.via, attempt.action, attempt.result, attempt.version_number) == (
        "command",
        "push",
        "applied",
        1,
    )
    assert attempt.fingerprint == version.fingerprint

    (team / "helpers.py").write_text('SUBJECT = "Hi"\n')
    output = push(str(team / "segflow_config.py"))
    assert "Templates\n  ~ hello" in output and "Files\n  ~ helpers.py" in output


def test_rollback_applies_a_stored_version_with_the_same_plan_and_safety(team):
    push(str(team / "segflow_config.py"))
    (team / "helpers.py").write_text('SUBJECT = "Hi"\n')
    push(str(team / "segflow_config.py"))

    out = StringIO()
    call_command("segflow_push", "--rollback", "--dry-run", stdout=out)
    assert "Rolling back to the previous version (dry run) ..." in out.getvalue()
    assert "Plan for rolling back to version 1 (" in out.getvalue()
    assert "Templates\n  ~ hello" in out.getvalue()
    assert EmailTemplate.objects.get().source.startswith("subject: Hi")

    out = StringIO()
    call_command("segflow_push", "--rollback", stdout=out)
    assert "Rolled back. Version 1 is live again." in out.getvalue()
    assert EmailTemplate.objects.get().source.startswith("subject: Hello")
    assert Push.objects.first().rollback and Push.objects.first().version.number == 1

    out = StringIO()
    call_command("segflow_push", "--rollback", "--to", "1", stdout=out)
    assert "Nothing to change: what is stored already matches version 1" in out.getvalue()
    with pytest.raises(CommandError, match=r"Nothing was pushed: there is no version 7 \(kept"):
        call_command("segflow_push", "--rollback", "--to", "7")
    with pytest.raises(CommandError, match="--to goes with --rollback"):
        call_command("segflow_push", "--to", "1")
    results = list(PushAttempt.objects.order_by("id").values_list("action", "result"))
    assert results[-3:] == [
        ("rollback", "applied"),
        ("rollback", "unchanged"),
        ("rollback", "failed"),
    ]


def test_a_failed_push_is_audited_and_changes_nothing(team):
    (team / "segflow_config.py").write_text("config = {'templates': {'x': {}}}\n")
    with pytest.raises(CommandError, match="The config is not valid: templates.x.subject"):
        push(str(team / "segflow_config.py"))
    attempt = PushAttempt.objects.get()
    assert attempt.result == "failed" and "templates.x.subject" in attempt.message
    assert not ConfigVersion.objects.exists()


def test_the_push_history_shows_each_versions_source_and_plan(team, admin_client):
    push(str(team / "segflow_config.py"))
    (team / "helpers.py").write_text('SUBJECT = "Hi"\n')
    push(str(team / "segflow_config.py"))
    call_command("segflow_push", "--rollback", stdout=StringIO())
    history = admin_client.get(reverse("admin:segflow_push_changelist")).content.decode()
    assert "version 1" in history and "version 2" in history
    latest = Push.objects.first()
    page = admin_client.get(reverse("admin:segflow_push_change", args=[latest.pk]))
    text = page.content.decode()
    assert "Plan for rolling back to version 1" in text
    assert "helpers.py" in text and "SUBJECT = &quot;Hello&quot;" in text
    assert "segflow_config.py (the config module)" in text
    version = admin_client.get(
        reverse("admin:segflow_configversion_change", args=[latest.version.pk])
    )
    assert "emails/partials/footer.html" in version.content.decode()
    audit = admin_client.get(reverse("admin:segflow_pushattempt_changelist")).content.decode()
    assert audit.count("applied") >= 3


def test_keys_have_a_scope_and_existing_keys_are_for_the_api(api):
    out = StringIO()
    call_command("segflow_create_api_key", "ci-deploy", "--scope", "push", stdout=out)
    assert "API key 'ci-deploy' (scope push) created" in out.getvalue()
    assert ApiKey.objects.get(name="ci-deploy").scope == "push"
    assert ApiKey.objects.get(name="tests").scope == "ingest"  # the default
    with pytest.raises(CommandError, match="invalid choice: 'admin'"):
        call_command("segflow_create_api_key", "x", "--scope", "admin")
    with pytest.raises(ValueError, match="scope: must be one of ingest, push"):
        create_api_key("x", "admin")

    _, push_key = create_api_key("ci", "push")
    response = APIClient().get("/api/users/jane", HTTP_AUTHORIZATION=f"Bearer {push_key}")
    assert response.status_code == 403
    assert "scope 'push'" in response.json()["error"]
    assert api.post("/api/push", {}, format="json").status_code == 403  # an ingest key


def test_a_bad_bundle_from_a_local_folder_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="config: no file at"):
        bundle_from_location(str(tmp_path / "missing.py"))
