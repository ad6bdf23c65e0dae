"""segflow.testing: a team's flows tested in plain pytest, by the real engine on a fake clock."""

import os
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from segflow.live_config import live_config
from segflow.testing import DEFAULT_START, SimulationError, simulate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "segflow_config.py"
ANN = {"email": "ann@example.com", "name": "Ann"}

# A config of our own: every kind of step, a branch on an attribute, an attribute write, a
# campaign entered by an event, and flows that fail.
FLOWS = """
from segflow.config import SegflowConfig

def drip(ctx, rt):
    result = yield rt.send_email("hello")
    ctx.user.stage = "greeted" if result.success else "unreachable"
    yield rt.wait(hours=2)
    if ctx.user.plan == "pro":
        yield rt.send_email("pro-tips")
    else:
        yield rt.send_email("upgrade")
    yield rt.wait(days=1)
    yield rt.send_email("bye")

def vip(ctx, rt):
    yield rt.send_email("hello")

def fragile(ctx, rt):
    yield rt.send_email("hello")
    yield rt.wait(hours=1)
    raise RuntimeError("the flow broke for " + ctx.user.id)

def typo(ctx, rt):
    template = "helo"  # (a literal name is checked when the config loads)
    yield rt.send_email(template)

html = lambda user: "<p>Hi {}</p>".format(user.name)
config: SegflowConfig = {
    "templates": {
        name: {"subject": name + " {{ user.name }}", "html": html}
        for name in ("hello", "pro-tips", "upgrade", "bye")
    },
    "segments": {
        "everyone": {"sql": "SELECT u.id FROM users u"},
        "testers": {"evaluator": lambda users: users.filter(attributes__tester=True)},
        "buyers": {"sql": "SELECT DISTINCT user_id AS id FROM events WHERE name = 'purchase'"},
    },
    "campaigns": {
        "drip": {"segments": ["everyone"], "behavior": "static", "flow": drip},
        "vip": {"segments": ["buyers"], "behavior": "static", "flow": vip},
        "fragile": {"segments": ["testers"], "behavior": "static", "flow": fragile},
        "typo": {"segments": ["testers"], "behavior": "static", "flow": typo},
    },
    "transactions": {
        "receipt": {"event": "purchase", "subject": "Thanks", "html": html},
    },
}
"""


@pytest.fixture
def flows(tmp_path) -> Path:
    path = tmp_path / "flows" / "segflow_config.py"
    path.parent.mkdir()
    path.write_text(FLOWS)
    return path


def test_the_docs_examples_work(monkeypatch):
    """docs/testing.md's examples that stand alone, run as written from the repository's root."""
    text = (ROOT / "docs" / "testing.md").read_text()
    examples = [
        code
        for code in re.findall(r"```python\n(.*?)```", text, re.S)
        if "from segflow.testing import" in code
    ]
    assert len(examples) == 2 and all("assert run.sent" in code for code in examples)
    monkeypatch.chdir(ROOT)
    for code in examples:
        exec(compile(code, "docs/testing.md", "exec"), {})


def test_the_example_configs_onboarding_step_by_step():
    run = simulate(EXAMPLE, "onboarding", user=ANN)
    assert run.sent == ["welcome"]
    assert run.emails[0].subject == "Welcome Ann!"
    assert "Ann" in run.emails[0].html and "Ann" in run.emails[0].text
    assert run.emails[0].to == "ann@example.com"
    assert run.status == "waiting"
    assert run.now == DEFAULT_START

    run.advance(hours=23, minutes=59)
    assert run.sent == ["welcome"]
    run.advance(minutes=1)
    # The profile was never completed: the reminder, at the end of the first day to the second.
    assert run.sent == ["welcome", "complete-profile-reminder"]
    assert run.emails[1].at == DEFAULT_START + timedelta(days=1)
    run.advance(days=6)
    assert run.sent == ["welcome", "complete-profile-reminder", "feature-highlights"]
    assert run.emails[2].at == DEFAULT_START + timedelta(days=7)
    assert run.status == "completed"
    assert run.steps == [
        "send_email('welcome')",
        "wait(1 day, 0:00:00)",
        "send_email('complete-profile-reminder')",
        "wait(3 days, 0:00:00)",
        "wait(3 days, 0:00:00)",
        "send_email('feature-highlights')",
    ]


def test_the_clock_is_the_simulations_and_only_while_it_works():
    start = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
    run = simulate(EXAMPLE, "onboarding", user=ANN, start=start)
    assert run.emails[0].at == start
    run.advance(timedelta(days=2), hours=3)
    assert run.now == start + timedelta(days=2, hours=3)
    assert run.emails[1].at == start + timedelta(days=1)
    # Outside the simulation's calls, time is the test's own.
    assert abs(timezone.now() - datetime.now(UTC)) < timedelta(minutes=1)
    assert timezone.now() > datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(SimulationError, match="zero or more"):
        run.advance(hours=-1)


def test_set_user_changes_what_the_flow_sees_and_the_flow_writes_attributes(flows):
    run = simulate(flows, "drip", user=ANN)
    assert run.sent == ["hello"]
    assert run.user == {**ANN, "stage": "greeted"}  # written by the flow
    run.set_user(plan="pro")
    run.advance(hours=2)
    assert run.sent == ["hello", "pro-tips"]
    run.set_user({"plan": None}, name="Annie")  # None removes an attribute, as PATCH does
    assert run.user == {"email": "ann@example.com", "name": "Annie", "stage": "greeted"}
    run.advance(days=1)
    assert run.sent == ["hello", "pro-tips", "bye"]
    assert run.emails[-1].subject == "bye Annie"
    assert run.status == "completed"


def test_the_other_branch_for_a_user_without_the_attribute(flows):
    run = simulate(flows, "drip", user=ANN)
    run.advance(days=2)
    assert run.sent == ["hello", "upgrade", "bye"]


def test_a_user_without_an_address_waits_for_one_then_the_email_is_skipped(flows):
    run = simulate(flows, "drip", user={"name": "Ann"})
    assert run.sent == [] and run.status == "waiting"
    run.advance(hours=1)
    assert run.sent == []
    assert [(e.template, e.status) for e in run.skipped] == [("hello", "skipped")]
    assert "address" in run.skipped[0].reason
    assert run.user["stage"] == "unreachable"  # the flow saw result.success False


def test_emit_goes_through_the_event_path(flows):
    run = simulate(flows, "vip", user=ANN)
    assert run.status == "not entered" and run.sent == []
    run.emit("purchase", {"amount": 10})
    # The event's segment let the user in, and its transaction sent a receipt.
    assert run.status == "completed"
    assert run.sent == ["hello"]
    assert [(e.template, e.campaign, e.transaction) for e in run.outbox] == [
        ("hello", "drip", ""),  # the user is in everyone's campaign too
        ("receipt", "", "receipt"),
        ("hello", "vip", ""),
    ]


def test_the_example_winback_enters_a_user_after_thirty_quiet_days_and_lets_them_go():
    last_login = DEFAULT_START - timedelta(days=29)
    run = simulate(EXAMPLE, "winback-campaign", user={**ANN, "lastLoginAt": last_login.isoformat()})
    assert run.status == "not entered"
    run.advance(days=2)
    assert run.sent == ["winback"]
    # Entered by the time-based segment's refresh, within the hour the thirty days ran out.
    entered = run.emails[0].at - last_login
    assert timedelta(days=30) <= entered <= timedelta(days=30, hours=1)
    run.advance(days=1)
    assert run.sent == ["winback", "winback"]
    run.emit("login")
    assert run.status == "exited"
    run.advance(days=10)
    assert run.sent == ["winback", "winback"]


def test_replays_cleanly_on_an_unchanged_or_compatible_flow_and_not_on_a_changed_one(tmp_path):
    run = simulate(EXAMPLE, "onboarding", user=ANN)
    run.advance(days=1)
    assert run.replays_cleanly_on(EXAMPLE)
    assert run.replay_problem(EXAMPLE) is None

    def longer_first_wait(ctx, rt):  # a wait's length may change: a waiting user keeps theirs
        yield rt.send_email("welcome")
        yield rt.wait(days=2)
        if not ctx.user.profileCompleted:
            yield rt.send_email("complete-profile-reminder")
            yield rt.wait(days=3)
        yield rt.wait(days=3)
        yield rt.send_email("feature-highlights")

    def no_reminder(ctx, rt):
        yield rt.send_email("welcome")
        yield rt.wait(days=1)
        yield rt.send_email("feature-highlights")

    assert run.replays_cleanly_on(longer_first_wait)
    assert not run.replays_cleanly_on(no_reminder)
    assert "step 3" in run.replay_problem(no_reminder)
    assert "feature-highlights" in run.replay_problem(no_reminder)

    changed = tmp_path / "changed"
    shutil.copytree(EXAMPLE.parent, changed)
    source = (changed / "segflow_config.py").read_text()
    (changed / "segflow_config.py").write_text(
        source.replace('yield rt.send_email("welcome")', 'yield rt.send_email("winback")')
    )
    assert not run.replays_cleanly_on(changed / "segflow_config.py")
    assert "step 1" in run.replay_problem(changed / "segflow_config.py")
    # Asking did not change the run: it goes on on its own flow.
    run.advance(days=6)
    assert run.sent == ["welcome", "complete-profile-reminder", "feature-highlights"]


def test_a_failing_flow_shows_its_error(flows):
    run = simulate(flows, "fragile", user={**ANN, "tester": True})
    run.advance(hours=1)
    assert run.status == "failed"
    assert "RuntimeError('the flow broke for user-1')" in run.error
    assert 'raise RuntimeError("the flow broke for " + ctx.user.id)' in run.error  # traceback
    assert "failed: the flow raised RuntimeError" in repr(run)
    assert run.sent == ["hello"]

    typo = simulate(flows, "typo", user={**ANN, "tester": True})
    assert typo.status == "failed"
    assert "send_email('helo'): no such template" in typo.error
    assert "known: bye, hello, pro-tips, upgrade" in typo.error


def test_clear_errors_for_what_cannot_be_simulated(flows, tmp_path):
    with pytest.raises(SimulationError) as raised:
        simulate(flows, "onbaording", user=ANN)
    assert str(raised.value) == (
        f"no campaign 'onbaording' in {flows} (its campaigns: 'drip', 'fragile', 'typo', 'vip')"
    )
    run = simulate(flows, "drip", user=ANN)
    elsewhere = tmp_path / "other" / "segflow_config.py"
    elsewhere.parent.mkdir()
    elsewhere.write_text(FLOWS.replace('"drip": {', '"drip2": {'))
    with pytest.raises(SimulationError, match=r"no campaign 'drip' in .*'drip2'"):
        run.replays_cleanly_on(elsewhere)
    with pytest.raises(SimulationError, match="timezone-aware"):
        simulate(flows, "drip", start=datetime(2026, 1, 1))


def test_runs_are_isolated_from_each_other_and_from_the_process(flows):
    first = simulate(flows, "drip", user=ANN)
    second = simulate(flows, "drip", user={"email": "bob@example.com", "plan": "pro"})
    first.advance(days=2)
    # The same user id in both, each in a database of its own, on a clock of its own.
    assert second.now == DEFAULT_START
    assert second.sent == ["hello"]
    assert [e.to for e in second.outbox] == ["bob@example.com"]
    second.advance(hours=2)
    assert second.sent == ["hello", "pro-tips"]
    assert first.sent == ["hello", "upgrade", "bye"]
    assert first.now == DEFAULT_START + timedelta(days=2)
    third = simulate(flows, "drip", user=ANN)
    assert [e.template for e in third.outbox] == ["hello"]
    assert live_config._config is None  # the process's own config is left as it was


@pytest.mark.parametrize(
    "caller",
    [
        pytest.param("in a test transaction", marks=pytest.mark.django_db),
        pytest.param("committing", marks=pytest.mark.django_db(transaction=True)),
    ],
)
def test_the_callers_own_database_is_never_touched(flows, caller):
    from campaigns.models import Cursor
    from delivery.models import OutboxEmail
    from segflow.models import User

    User.objects.create(id="mine", attributes={"email": "mine@example.com"})
    run = simulate(flows, "drip", user=ANN)
    run.advance(days=2)
    assert run.sent == ["hello", "upgrade", "bye"]
    assert list(User.objects.values_list("id", flat=True)) == ["mine"]
    assert not Cursor.objects.exists() and not OutboxEmail.objects.exists()


# Actions a test may take on a run: let time pass, change the user, or have them do something.
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(min_value=0, max_value=60 * 60 * 30)),
        st.tuples(st.just("set_user"), st.sampled_from(["pro", "free", None])),
        st.tuples(st.just("emit"), st.sampled_from(["purchase", "login"])),
    ),
    max_size=6,
)


def _act(run, action) -> None:
    kind, value = action
    if kind == "advance":
        run.advance(seconds=value)
    elif kind == "set_user":
        run.set_user(plan=value)
    else:
        run.emit(value)


def _outcome(run) -> tuple:
    return (run.now, run.status, run.sent, run.user, [e.at for e in run.outbox], run.steps)


# (`flows` is a file the examples only read.)
@hypothesis_settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mine=ACTIONS, theirs=ACTIONS, order=st.randoms(use_true_random=False))
def test_for_any_interleaving_a_run_ends_as_if_it_were_alone(flows, mine, theirs, order):
    alone = simulate(flows, "drip", user=ANN)
    for action in mine:
        _act(alone, action)

    run = simulate(flows, "drip", user=ANN)
    other = simulate(flows, "drip", user={"email": "bob@example.com"})
    pending = [(run, a) for a in mine] + [(other, a) for a in theirs]
    # Shuffle the other run's actions in between, keeping each run's own order.
    slots = sorted(order.sample(range(len(pending)), len(theirs)))
    mixed, mine_left, theirs_left = [], list(mine), list(theirs)
    for n in range(len(pending)):
        if n in slots:
            mixed.append((other, theirs_left.pop(0)))
        else:
            mixed.append((run, mine_left.pop(0)))
    for target, action in mixed:
        _act(target, action)
    assert _outcome(run) == _outcome(alone)


def test_a_simulation_after_the_first_takes_well_under_a_second(flows):
    simulate(flows, "drip", user=ANN)  # the first of the process migrates the template database
    took = []
    for _ in range(3):
        # The process's own time: the machine running the tests may be busy with others.
        began = time.process_time()
        run = simulate(EXAMPLE, "onboarding", user=ANN)
        run.advance(days=7)
        assert run.status == "completed"
        took.append(time.process_time() - began)
    assert statistics.median(took) < 1.0, took


def test_a_team_tests_its_flows_in_plain_pytest_without_django_settings(tmp_path):
    """A team's repository: the config, its emails and a test file, run by pytest with no
    DJANGO_SETTINGS_MODULE; segflow configures Django itself."""
    repo = tmp_path / "team"
    shutil.copytree(ROOT / "examples", repo, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "test_more.py").write_text(
        textwrap.dedent(
            """
            from segflow.testing import simulate

            def test_a_quick_one():
                run = simulate("segflow_config.py", "onboarding", user={"email": "a@b.c"})
                assert run.sent == ["welcome"]
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b(\d+) passed\b", result.stdout)
    assert " 0 passed" not in result.stdout


# Steps and campaign rules added beside the simulator: they run through it as they are.
RULES = """
from datetime import timedelta
from segflow.config import SegflowConfig

def tips(ctx, rt):
    variant = yield rt.split({"short": 50, "long": 50})
    ctx.user.variant = variant
    yield rt.send_email("tip")
    yield rt.wait(days=1)
    yield rt.send_email("tip")

def news(ctx, rt):
    for _ in range(2):
        yield rt.send_email("news")
        yield rt.wait(hours=12)

html = lambda user: "<p>hi</p>"
config: SegflowConfig = {
    "frequency_cap": {"emails": 3, "within": timedelta(days=7)},
    "default_timezone": "Europe/Berlin",
    "templates": {"tip": {"subject": "A tip", "html": html},
                  "news": {"subject": "News", "html": html}},
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {
        "tips": {"segments": ["everyone"], "flow": tips,
                 "send_window": {"start": "09:00", "end": "20:00", "days": "mon-fri"}},
        "news": {"segments": ["everyone"], "flow": news},
    },
}
"""


def test_splits_send_windows_and_the_frequency_cap_run_through_it(tmp_path):
    path = tmp_path / "rules" / "segflow_config.py"
    path.parent.mkdir()
    path.write_text(RULES)
    friday_evening = datetime(2026, 1, 9, 20, 30, tzinfo=UTC)  # 21:30 in Berlin
    run = simulate(path, "tips", user=ANN, start=friday_evening)
    variant = run.user["variant"]
    assert variant in ("short", "long")
    assert run.steps == ["split({'short': 50, 'long': 50})"]
    assert run.sent == [] and run.status == "waiting"  # for the window to open
    run.advance(days=3)
    # Monday 09:00 in Berlin, 08:00 UTC: the window opened, and the cap allowed a third email.
    assert run.sent == ["tip"]
    assert run.emails[0].at == datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    run.advance(days=1)
    # With the other campaign's two, a fourth email in 7 days: the cap skipped it.
    assert [e.template for e in run.outbox if e.status != "skipped"] == ["news"] * 2 + ["tip"]
    assert [e.template for e in run.skipped] == ["tip"]
    assert "frequency_cap" in run.skipped[0].reason
    # The same user in the same campaign gets the same branch, every time.
    again = simulate(path, "tips", user=ANN, start=friday_evening)
    assert again.user["variant"] == variant


WAITING = """
from datetime import timedelta

def cart(ctx, rt):
    started = ctx.now
    purchase = yield rt.wait_for_event("purchase", timeout=timedelta(days=1),
                                       where=lambda e: (e.amount or 0) > 5)
    if purchase is None:
        yield rt.send_email("reminder")
    else:
        ctx.user.waitedHours = round((ctx.now - started).total_seconds() / 3600)
        yield rt.send_email("thanks")

html = lambda user: "<p>hi</p>"
config = {
    "templates": {"reminder": {"subject": "Reminder", "html": html},
                  "thanks": {"subject": "Thanks", "html": html}},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"cart": {"segments": ["all"], "behavior": "static", "flow": cart}},
}
"""


def test_a_wait_for_an_event_is_resumed_by_an_emitted_event_and_ctx_now_follows_the_clock(
    tmp_path,
):
    path = tmp_path / "waiting" / "segflow_config.py"
    path.parent.mkdir()
    path.write_text(WAITING)
    bought = simulate(path, "cart", user={"email": "a@example.com"})
    bought.advance(hours=3)
    bought.emit("purchase", {"amount": 2})  # where= turns it down
    assert bought.sent == []
    bought.advance(hours=2)
    bought.emit("purchase", {"amount": 20})
    assert bought.sent == ["thanks"]
    assert bought.user["waitedHours"] == 5
    idle = simulate(path, "cart", user={"email": "b@example.com"})
    idle.advance(days=1)
    assert idle.sent == ["reminder"]
