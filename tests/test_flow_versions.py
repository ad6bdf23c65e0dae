"""Changing a live flow: what a push does with the users in the middle of it (`on_change`),
`rt.patched` for a new branch only for those who reach it after the push, and the pushed version
every step and email records.

Through `segflow_push` and the push API, with the schedule run on a controlled clock.
"""

import io
import json

import pytest
from django.core.management import call_command
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from campaigns.flow import FlowDiverged, FlowRun, RecordedStep
from campaigns.models import Cursor, CursorStep
from campaigns.steps import Patched, Runtime
from delivery.models import OutboxEmail
from segflow.api_keys import create_api_key
from segflow.client import collect_bundle
from segflow.config import ConfigError, validate_config
from segflow.models import ConfigVersion, PushAttempt
from segflow.users import put_user
from segflow.versions import describe as describe_version

from .conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from segflow.config import SegflowConfig

def welcome_flow(ctx, rt):
{flow}

config: SegflowConfig = {{
    "templates": {{
        "welcome": {{"subject": "Welcome", "html": lambda user: "<p>welcome</p>"}},
        "tips": {{"subject": "Tips", "html": lambda user: "<p>tips</p>"}},
        "news": {{"subject": "News", "html": lambda user: "<p>news</p>"}},
        "bye": {{"subject": "Bye", "html": lambda user: "<p>bye</p>"}},
    }},
    "segments": {{
        "pro": {{"sql": "SELECT u.id FROM users u "
                        "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = 'pro'"}},
    }},
    "campaigns": {{
        "welcome": {{"segments": ["pro"], "behavior": "static", "flow": welcome_flow{extra}}},
    }},
}}
"""

TIPS = """
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("tips")
    yield rt.wait(days=1)
    yield rt.send_email("bye")
"""
NEWS = TIPS.replace('"tips"', '"news"')
PATCHED = """
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    if (yield rt.patched("news-instead-of-tips")):
        yield rt.send_email("news")
    else:
        yield rt.send_email("tips")
    yield rt.wait(days=1)
    yield rt.send_email("bye")
"""


def config_text(flow: str, on_change: str | None = None) -> str:
    extra = f', "on_change": {on_change!r}' if on_change else ""
    return CONFIG.format(flow=flow.rstrip("\n"), extra=extra)


def join(user_id: str) -> None:
    """A user who matches the campaign's segment, as the API stores them."""
    put_user(user_id, {"email": f"{user_id}@example.com", "plan": "pro"})


def push_command(location: str, *args: str) -> str:
    out = io.StringIO()
    call_command("segflow_push", "--config", location, *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def team(tmp_path, settings):
    """The team's config file; `write(text)` changes it, and returns its location."""
    path = tmp_path / "team" / "segflow_config.py"
    path.parent.mkdir()
    settings.SEGFLOW_CONFIG = str(path)

    def write(text: str) -> str:
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture
def two_in_flight(team, clock):
    """Version 1 pushed; "early" has had welcome and tips and waits for bye, "late" has had
    welcome and waits for its second email."""
    join("early")
    push_command(team(config_text(TIPS)))
    clock.advance_and_tick(hours=1)
    clock.advance_and_tick(days=1)  # early: tips sent
    join("late")  # welcome sent at once
    clock.advance_and_tick(hours=1)
    assert sent("early") == ["welcome", "tips"] and sent("late") == ["welcome"]
    return team


def versions_of_emails(user_id: str) -> dict[str, int | None]:
    rows = OutboxEmail.objects.filter(user_id=user_id)
    return dict(rows.values_list("template_name", "config_version"))


def in_flight_line(plan: str) -> str:
    return next(line for line in plan.splitlines() if "in flight" in line)


def cursor_of(user_id: str) -> Cursor:
    return Cursor.objects.filter(user_id=user_id).order_by("-id").first()


def test_on_change_end_is_the_default_the_diverging_user_ends(two_in_flight, clock):
    location = two_in_flight(config_text(NEWS))
    planned = push_command(location, "--dry-run")
    assert (
        "2 user(s) in flight, on_change='end': 1 continue on the new flow, 0 restart from the "
        "top, 0 stay on version 1, 1 end" in planned
    )
    assert cursor_of("early").status == Cursor.Status.ACTIVE  # a dry run changes nothing
    assert in_flight_line(planned) == in_flight_line(push_command(location))
    assert cursor_of("early").status == Cursor.Status.DIVERGED
    clock.advance_and_tick(days=2)
    assert sent("early") == ["welcome", "tips"]
    assert sent("late") == ["welcome", "news", "bye"]


def test_on_change_restart_runs_the_flow_again_from_the_top(two_in_flight, clock):
    location = two_in_flight(config_text(NEWS, "restart"))
    planned = push_command(location, "--dry-run")
    assert "1 continue on the new flow, 1 restart from the top, 0 stay on version 1, 0 end" in (
        planned
    )
    push_command(location)
    old, new = Cursor.objects.filter(user_id="early").order_by("id")
    assert old.status == Cursor.Status.RESTARTED and old.entry_key is None
    assert "restarted from the top" in old.end_reason
    assert (new.status, new.entry_key, new.step_count) == (Cursor.Status.ACTIVE, "early", 0)
    clock.advance_and_tick(minutes=1)
    # From step 1: the restarted flow sends its welcome again (docs/config.md says so).
    assert sent("early") == ["welcome", "tips", "welcome"]
    clock.advance_and_tick(days=2)
    assert sent("early") == ["welcome", "tips", "welcome", "news", "bye"]
    assert cursor_of("early").status == Cursor.Status.COMPLETED
    assert sent("late") == ["welcome", "news", "bye"]
    # Only the one who diverged restarted: one new cursor in all.
    assert Cursor.objects.count() == 3


def test_on_change_keep_old_finishes_the_old_flow_for_those_who_diverge(
    two_in_flight, clock, settings
):
    settings.SEGFLOW_CONFIG_VERSIONS_KEPT = 1
    location = two_in_flight(config_text(NEWS, "keep_old"))
    planned = push_command(location, "--dry-run")
    assert "1 continue on the new flow, 0 restart from the top, 1 stay on version 1, 0 end" in (
        planned
    )
    push_command(location)
    assert cursor_of("early").pinned_version == 1
    assert cursor_of("late").pinned_version is None
    # Version 1 outlives SEGFLOW_CONFIG_VERSIONS_KEPT=1 while "early" still runs its flow.
    assert sorted(ConfigVersion.objects.values_list("number", flat=True)) == [1, 2]
    join("new")
    clock.advance_and_tick(days=1, hours=1)
    assert sent("early") == ["welcome", "tips", "bye"]
    assert sent("late") == ["welcome", "news"]
    assert sent("new") == ["welcome", "news"]
    early = cursor_of("early")
    assert early.status == Cursor.Status.COMPLETED
    # Each email and step names the version whose flow made it.
    assert versions_of_emails("early") == {"welcome": 1, "tips": 1, "bye": 1}
    assert versions_of_emails("late") == {"welcome": 1, "news": 2}
    assert versions_of_emails("new") == {"welcome": 2, "news": 2}
    assert list(early.steps.values_list("config_version", flat=True)) == [1, 1, 1, 1, 1]
    # Once nobody runs it, the next push prunes version 1.
    push_command(two_in_flight(config_text(TIPS, "keep_old")))
    assert 1 not in ConfigVersion.objects.values_list("number", flat=True)
    # Its rows still say which commit made them: the push's audit keeps it.
    PushAttempt.objects.filter(version_number=1).update(git_commit="b" * 40)
    assert describe_version(1) == "version 1 (commit bbbbbbbbbbbb)"


def test_keep_old_survives_another_push_and_a_process_that_loads_the_old_version(
    two_in_flight, clock
):
    """A worker that never saw version 1 loads it from the database for the pinned cursor; a
    second change of the flow leaves it where it is."""
    from segflow.live_config import live_config
    from segflow.versions import forget_loaded

    push_command(two_in_flight(config_text(NEWS, "keep_old")))
    plan = push_command(two_in_flight(config_text(NEWS.replace("bye", "tips"), "keep_old")))
    assert "stay on version 2" in plan and "0 user(s) in flight" not in plan
    assert cursor_of("early").pinned_version == 1
    live_config.reset()
    forget_loaded()
    clock.advance_and_tick(days=1, hours=1)
    assert sent("early") == ["welcome", "tips", "bye"]


def test_patched_takes_the_new_branch_only_for_who_reaches_it_after_the_push(two_in_flight, clock):
    location = two_in_flight(config_text(PATCHED))
    plan = push_command(location)
    # Nobody diverges: "early" went past the patch before it existed and replays False.
    assert "2 continue on the new flow, 0 restart from the top, 0 stay on version 1, 0 end" in plan
    join("new")
    clock.advance_and_tick(days=2)
    assert sent("early") == ["welcome", "tips", "bye"]
    assert sent("late") == ["welcome", "news", "bye"]
    assert sent("new") == ["welcome", "news", "bye"]
    # The patch is recorded where it was taken, so it replays the same.
    late = CursorStep.objects.filter(cursor__user_id="late").order_by("index")
    assert [(s.kind, s.result) for s in late][2] == ("patched", True)
    assert not CursorStep.objects.filter(cursor__user_id="early", kind="patched").exists()
    assert cursor_of("late").status == Cursor.Status.COMPLETED


def test_the_push_api_plan_counts_what_the_push_then_does(two_in_flight, client, settings, clock):
    settings.SEGFLOW_ALLOW_REMOTE_PUSH = True
    key = create_api_key("ci", "push")[1]
    location = two_in_flight(config_text(NEWS, "restart"))
    body = {"bundle": collect_bundle(location)}

    def post(dry_run: bool) -> dict:
        response = client.post(
            "/api/push",
            json.dumps({**body, "dry_run": dry_run}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        assert response.status_code == 200, response.content
        return response.json()

    planned = post(dry_run=True)["in_flight"]
    assert planned == {
        "welcome": {"on_change": "restart", "continue": 1, "restart": 1, "keep_old": 0, "end": 0}
    }
    assert post(dry_run=False)["in_flight"] == planned
    statuses = list(Cursor.objects.order_by("id").values_list("status", flat=True))
    assert statuses.count(Cursor.Status.RESTARTED) == planned["welcome"]["restart"]


def test_the_admin_shows_the_version_of_an_email_and_of_each_step(
    two_in_flight, clock, admin_client
):
    push_command(two_in_flight(config_text(NEWS, "keep_old")))
    ConfigVersion.objects.filter(number=1).update(git_commit="a" * 40, git_dirty=False)
    cursor = cursor_of("early")
    page = admin_client.get(reverse("admin:campaigns_cursor_change", args=[cursor.pk]))
    text = page.content.decode()
    assert "the flow of version 1 (commit aaaaaaaaaaaa)" in text
    assert text.count("run by version 1 (commit aaaaaaaaaaaa)") == 4
    email = OutboxEmail.objects.get(user_id="late", template_name="welcome")
    page = admin_client.get(reverse("admin:delivery_outboxemail_change", args=[email.pk]))
    assert "version 1 (commit aaaaaaaaaaaa)" in page.content.decode()
    clock.advance_and_tick(days=1)
    news = OutboxEmail.objects.get(user_id="late", template_name="news")
    page = admin_client.get(reverse("admin:delivery_outboxemail_change", args=[news.pk]))
    assert "version 2" in page.content.decode()


def test_on_change_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"campaigns\.c\.on_change: must be one of"):
        validate_config(
            {
                "segments": {"s": {"sql": "SELECT u.id FROM users u"}},
                "campaigns": {"c": {"segments": ["s"], "flow": _tips, "on_change": "later"}},
            }
        )


# ---------------------------------------------------------------------------------------------
# The replay core: for any point a user of the old flow is at, the patched flow replays them.


def _tips(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("tips")
    yield rt.wait(days=1)
    yield rt.send_email("bye")


def _patched(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    if (yield rt.patched("news")):
        yield rt.send_email("news")
    else:
        yield rt.send_email("tips")
    yield rt.wait(days=1)
    yield rt.send_email("bye")


def _history(flow, results: dict[str, object] | None = None) -> list[RecordedStep]:
    """Every step `flow` yields, performed: patches answer True, as they do live."""
    run = FlowRun(flow, user_id="u", attributes={}, history=[])
    steps = []
    while (step := run.next_step().step) is not None:
        result = True if isinstance(step, Patched) else None
        steps.append(RecordedStep(step.kind, step.to_record(), result, {}))
        run.step_done(step, result)
    return steps


OLD = _history(_tips)
NEW = _history(_patched)


@hypothesis_settings(max_examples=30)
@given(st.integers(min_value=0, max_value=len(OLD)))
def test_any_user_of_the_old_flow_replays_on_the_patched_one(done):
    run = FlowRun(_patched, user_id="u", attributes={}, history=OLD[:done])
    following = run.next_step().step
    if done <= 2:  # not past the patch yet: they reach it live, and take the new branch
        expected = NEW[done]
    else:  # past it: the old branch, and the old flow's next step
        expected = OLD[done] if done < len(OLD) else None
    assert _described(following) == _described(expected)


def _described(step) -> tuple | None:
    if step is None:
        return None
    if isinstance(step, RecordedStep):
        return step.kind, step.args
    return step.kind, step.to_record()


@hypothesis_settings(max_examples=30)
@given(st.integers(min_value=0, max_value=len(NEW)))
def test_any_user_of_the_patched_flow_replays_it_the_same(done):
    run = FlowRun(_patched, user_id="u", attributes={}, history=NEW[:done])
    expected = NEW[done] if done < len(NEW) else None
    assert _described(run.next_step().step) == _described(expected)


def test_a_recorded_patch_the_code_no_longer_has_diverges():
    with pytest.raises(FlowDiverged, match=r"patched\('news'\)"):
        FlowRun(_tips, user_id="u", attributes={}, history=NEW[:4])


def test_rt_patched_needs_an_id():
    with pytest.raises(ValueError, match="patch id"):
        Runtime().patched("")


def test_a_pinned_cursor_whose_version_does_not_load_waits_until_it_does(
    two_in_flight, clock, caplog
):
    push_command(two_in_flight(config_text(NEWS, "keep_old")))
    stored = ConfigVersion.objects.get(number=1)
    good = dict(stored.files)
    ConfigVersion.objects.filter(number=1).update(
        files={**good, "segflow_config.py": "import a_module_nobody_installed\n"},
        fingerprint="f" * 64,
    )
    clock.advance_and_tick(days=1, hours=1)
    assert sent("early") == ["welcome", "tips"]  # not bye, and not the new flow's steps
    assert cursor_of("early").status == Cursor.Status.ACTIVE
    assert "runs the flow of version 1, which does not load here" in caplog.text
    ConfigVersion.objects.filter(number=1).update(files=good, fingerprint=stored.fingerprint)
    clock.advance_and_tick(hours=1)  # once the schedule's claim on it lapses
    assert sent("early") == ["welcome", "tips", "bye"]


def _code_config(flow, on_change: str):
    return validate_config(
        {
            "templates": {
                name: {"subject": name, "html": lambda user: "<p>hi</p>"}
                for name in ("welcome", "tips", "news", "bye")
            },
            "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
            "campaigns": {"c": {"segments": ["all"], "flow": flow, "on_change": on_change}},
        }
    )


def _news(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("news")


def test_keep_old_without_a_stored_version_ends_and_says_why(pushed, clock):
    join("a")
    pushed(_code_config(_tips, "keep_old"))
    clock.advance_and_tick(days=1, hours=1)
    assert sent("a") == ["welcome", "tips"]
    plan = pushed(_code_config(_news, "keep_old"))
    assert plan.in_flight["c"].as_json() == {
        "on_change": "keep_old",
        "continue": 0,
        "restart": 0,
        "keep_old": 0,
        "end": 1,
    }
    cursor = cursor_of("a")
    assert cursor.status == Cursor.Status.DIVERGED
    assert "not stored as a version" in cursor.end_reason
