"""segflow_push reads the flows and templates before it applies anything: mistakes that would show
only when a user reaches them are refused, naming the file and line; a flow that reads the clock
or `random` is pushed with a warning; a long evaluation of segments shows its progress."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from campaigns.checks import check_flows, step_signatures
from campaigns.models import Campaign, Cursor
from campaigns.steps import Runtime, Step, step_kind
from segflow.api_keys import create_api_key
from segflow.config import validate_config
from segflow.management.push_progress import PushProgress
from segflow.models import ConfigVersion, Push, PushAttempt, User
from segments.models import Segment, SegmentMembership
from templates.models import EmailTemplate
from transactions.models import Transaction

pytestmark = pytest.mark.django_db(transaction=True)

# The kinds of step a flow may yield: `rt`'s public methods.
STEP_NAMES = [name for name in vars(Runtime) if not name.startswith("_")]

HEAD = """\
import random
import time
from datetime import datetime, timedelta

from django.utils import timezone

"""

TAIL = """

config = {
    "templates": {
        "welcome": {"subject": "Welcome", "html": "emails/welcome.html"},
        "tips": {"subject": "Tips", "html": lambda user: "<p>tips</p>"},
    },
    "segments": {"%(segment)s": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"onboarding": {"segments": ["%(segment)s"], "flow": onboarding}},
    "transactions": {
        "receipt": {"event": "paid", "subject": "Receipt", "html": "emails/receipt.html"},
    },
}
"""

CLEAN_FLOW = """\
def onboarding(ctx, rt):
    sent = yield rt.send_email("welcome")
    if not sent.success:
        return
    yield rt.wait(days=1)
    if (yield rt.send_email("tips")).success:
        yield rt.wait(timedelta(days=1), hours=2)
    step = rt.wait(weeks=1)
    yield step
    yield from reminders(rt, ctx)

    def closing():
        yield rt.send_email("tips")

    yield from closing()



def reminders(runtime, context):
    if context.user.plan != "pro":
        yield runtime.send_email("tips")
"""

LAYOUT = (
    '<html><body>{% block body %}{% endblock %}{% include "emails/footer.html" %}</body></html>'
)


def write_config(folder: Path, flow: str, *, segment: str = "everyone", **templates: str) -> Path:
    """The team's folder: a config with `flow`, and its templates (these, else good ones)."""
    (folder / "emails").mkdir(parents=True, exist_ok=True)
    files = {
        "emails/layout.html": LAYOUT,
        "emails/footer.html": "<p>See you</p>",
        "emails/welcome.html": '{% extends "emails/layout.html" %}{% block body %}Hi{% endblock %}',
        "emails/receipt.html": "<p>{% include 'emails/footer.html' %}</p>",
    }
    files.update({name.replace("__", "/") + ".html": text for name, text in templates.items()})
    for name, text in files.items():
        (folder / name).write_text(text)
    path = folder / "segflow_config.py"
    path.write_text(HEAD + textwrap.dedent(flow) + TAIL % {"segment": segment})
    return path


def line_of(path: Path, marker: str) -> int:
    """The line of the config file that holds `marker` (a comment on the faulty line)."""
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if text.rstrip().endswith(marker):
            return number
    raise AssertionError(f"{marker!r} is not in {path}")


def stored() -> dict:
    """Everything a push could change, as it is in the database."""
    return {
        "segments": sorted(Segment.objects.values_list("name", "fingerprint")),
        "memberships": SegmentMembership.objects.count(),
        "campaigns": sorted(Campaign.objects.values_list("name", "fingerprint", "active")),
        "cursors": Cursor.objects.count(),
        "templates": sorted(EmailTemplate.objects.values_list("name", "fingerprint")),
        "transactions": sorted(Transaction.objects.values_list("name", "fingerprint")),
        "pushes": Push.objects.count(),
        "versions": ConfigVersion.objects.count(),
    }


def push(path: Path, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("segflow_push", "--config", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def users(db):
    for n in range(3):
        User.objects.create(id=f"user-{n}", attributes={"email": f"u{n}@example.com"})


@pytest.fixture
def live(tmp_path, users) -> dict:
    """A clean config pushed before the faulty one: what the refused push must leave as it is."""
    push(write_config(tmp_path / "before", CLEAN_FLOW))
    before = stored()
    assert before["campaigns"] and before["cursors"] == 3 and before["versions"] == 1
    return before


# ---------------------------------------------------------------------------------------------
# Refused.

REFUSED = {
    "send_email not yielded": (
        """\
        def onboarding(ctx, rt):
            rt.send_email("welcome")  # <-
            yield rt.wait(days=1)
        """,
        'rt.send_email("welcome") is not yielded; write yield rt.send_email("welcome")',
    ),
    "wait not yielded": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_email("welcome")
            rt.wait(days=1)  # <-
            yield rt.send_email("tips")
        """,
        "rt.wait(days=1) is not yielded; write yield rt.wait(days=1)",
    ),
    "a step's result read without yielding it": (
        """\
        def onboarding(ctx, rt):
            sent = rt.send_email("welcome")  # <-
            if sent.success:
                yield rt.wait(days=1)
        """,
        'rt.send_email("welcome") is not yielded, so sent is the step, not its result; '
        'write sent = yield rt.send_email("welcome")',
    ),
    "an unknown keyword": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_email("welcome")
            yield rt.wait(day=1)  # <-
        """,
        "rt.wait(day=1): rt.wait has no argument 'day' (did you mean days?); it takes delta, "
        "weeks, days, hours, minutes, seconds",
    ),
    "a step Runtime does not have": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_mail("welcome")  # <-
        """,
        "rt.send_mail(\"welcome\"): rt has no step 'send_mail'; did you mean rt.send_email?",
    ),
    "a missing argument": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_email()  # <-
        """,
        "rt.send_email(): rt.send_email() missing a required argument: 'template_id'",
    ),
    "yield 5": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_email("welcome")
            yield 5  # <-
        """,
        # Every step kind is offered, in name order (new kinds join the list by themselves).
        "yield 5: 5 is not a step; yield a step: "
        + ", ".join(f"rt.{name}(...)" for name in sorted(STEP_NAMES)),
    ),
    "yield a string": (
        """\
        def onboarding(ctx, rt):
            yield "welcome"  # <-
        """,
        'yield "welcome": "welcome" is not a step',
    ),
    "yield ctx.user": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_email("welcome")
            yield ctx.user  # <-
        """,
        "yield ctx.user: ctx.user is not a step",
    ),
    "a helper of the same module, followed": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_email("welcome")
            yield from later(rt)


        def later(runtime):
            yield runtime.wait(days=2)
            runtime.send_email("tips")  # <-
        """,
        'runtime.send_email("tips") is not yielded; write yield runtime.send_email("tips")',
    ),
    "a helper called without yield from": (
        """\
        def onboarding(ctx, rt):
            yield rt.send_email("welcome")
            later(rt)  # <-


        def later(rt):
            yield rt.wait(days=2)
        """,
        "later(rt) makes a generator that never runs, so none of its steps happen; "
        "write yield from later(rt)",
    ),
    "a helper yielded as if it were a step": (
        """\
        def onboarding(ctx, rt):
            yield later(rt)  # <-


        def later(rt):
            yield rt.wait(days=2)
        """,
        "yield later(rt) yields a generator, not a step; write yield from later(rt)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_faulty_flow_is_refused_naming_file_and_line_and_nothing_is_applied(case, tmp_path, live):
    flow, message = REFUSED[case]
    # The faulty push also adds a segment: none of it may be applied.
    path = write_config(tmp_path / "team", flow, segment="changed")
    with pytest.raises(CommandError) as refused:
        push(path)
    line = line_of(path, "# <-")
    assert f"The config is not valid: segflow_config.py:{line}: {message}" in str(refused.value)
    assert stored() == live
    assert PushAttempt.objects.order_by("-id").first().result == "failed"


@pytest.mark.parametrize(
    ("templates", "file", "line", "tag"),
    [
        (
            {"emails__welcome": '{% extends "emails/base.html" %}{% block body %}{% endblock %}'},
            "emails/welcome.html",
            1,
            '{% extends "emails/base.html" %}',
        ),
        (
            {"emails__receipt": "<p>Thanks</p>\n\n{% include 'emails/legal.html' %}"},
            "emails/receipt.html",
            3,
            '{% include "emails/legal.html" %}',
        ),
        # A template brought in by another is checked in turn.
        (
            {"emails__footer": "<p>\n{% include 'emails/unsubscribe.html' %}</p>"},
            "emails/footer.html",
            2,
            '{% include "emails/unsubscribe.html" %}',
        ),
    ],
)
def test_a_template_naming_a_file_that_does_not_exist_is_refused(
    templates, file, line, tag, tmp_path, live
):
    path = write_config(tmp_path / "team", CLEAN_FLOW, segment="changed", **templates)
    with pytest.raises(CommandError) as refused:
        push(path)
    assert (
        f"{file}:{line}: {tag} names a template that does not exist; template names are "
        "relative to the config file's folder"
    ) in str(refused.value)
    assert stored() == live


def test_every_problem_is_listed_at_once(tmp_path, live):
    path = write_config(
        tmp_path / "team",
        """\
        def onboarding(ctx, rt):
            rt.send_email("welcome")  # <-a
            yield rt.wait(hour=1)  # <-b
        """,
        emails__receipt="{% include 'emails/gone.html' %}",
    )
    with pytest.raises(CommandError) as refused:
        push(path)
    text = str(refused.value)
    assert f"segflow_config.py:{line_of(path, '# <-a')}: rt.send_email" in text
    assert f"segflow_config.py:{line_of(path, '# <-b')}: rt.wait(hour=1)" in text
    assert 'emails/receipt.html:1: {% include "emails/gone.html" %}' in text
    assert stored() == live


def test_a_step_kind_added_to_runtime_is_checked_with_no_change_to_the_checks(
    tmp_path, live, monkeypatch
):
    @step_kind
    @dataclass(frozen=True)
    class Nudge(Step):
        kind = "nudge_for_test"
        channel: str

    def nudge(self, channel: str, *, urgent: bool = False) -> Nudge:
        return Nudge(channel=channel)

    monkeypatch.setattr(Runtime, "nudge", nudge, raising=False)
    assert "nudge" in step_signatures()
    path = write_config(
        tmp_path / "team",
        """\
        def onboarding(ctx, rt):
            yield rt.send_email("welcome")
            rt.nudge("sms")  # <-a
            yield rt.nudge("sms", loud=True)  # <-b
        """,
    )
    with pytest.raises(CommandError) as refused:
        push(path)
    text = str(refused.value)
    assert (
        f'segflow_config.py:{line_of(path, "# <-a")}: rt.nudge("sms") is not yielded; '
        'write yield rt.nudge("sms")'
    ) in text
    assert (
        f'segflow_config.py:{line_of(path, "# <-b")}: rt.nudge("sms", loud=True): rt.nudge has '
        "no argument 'loud'; it takes channel, urgent"
    ) in text
    assert stored() == live


def test_a_push_over_http_is_refused_with_the_same_message(tmp_path, live, client, settings):
    from segflow.client import collect_bundle

    settings.SEGFLOW_ALLOW_REMOTE_PUSH = True
    key = create_api_key("ci", "push")[1]
    path = write_config(tmp_path / "team", REFUSED["wait not yielded"][0], segment="changed")
    answer = client.post(
        "/api/push",
        {"bundle": collect_bundle(str(path))},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert answer.status_code == 400
    line = line_of(path, "# <-")
    assert answer.json()["error"] == (
        f"The config is not valid: segflow_config.py:{line}: rt.wait(days=1) is not yielded; "
        "write yield rt.wait(days=1)"
    )
    assert stored() == live


# ---------------------------------------------------------------------------------------------
# Passed, warned.


def test_a_clean_config_is_pushed_with_no_warning(tmp_path, users):
    out, _ = push(write_config(tmp_path / "team", CLEAN_FLOW))
    assert "Warning" not in out
    assert "Pushed. Version 1 is live" in out
    assert Cursor.objects.filter(campaign__name="onboarding").count() == 3


def test_the_example_config_passes_the_checks(db):
    from .conftest import EXAMPLE_CONFIG

    out, _ = push(EXAMPLE_CONFIG, "--dry-run")
    assert "Warning" not in out and "Plan for" in out


WARNED = """\
def onboarding(ctx, rt):
    yield rt.send_email("welcome")
    if datetime.now().hour < 12:  # <-datetime
        yield rt.wait(hours=1)
    if timezone.now().weekday() == 5:  # <-timezone
        yield rt.wait(days=2)
    started = time.time()  # <-time
    if random.choice([True, False]):  # <-random
        yield rt.send_email("tips")
    yield from later(rt)


def later(rt):
    if random.random() < 0.1:  # <-helper
        yield rt.wait(minutes=5)
"""


def test_a_flow_reading_the_clock_or_random_is_pushed_with_warnings(tmp_path, users):
    path = write_config(tmp_path / "team", WARNED)
    out, _ = push(path)
    assert "Pushed. Version 1 is live" in out
    warnings = [line for line in out.splitlines() if line.startswith("Warning: ")]
    clock = (
        "reads the clock, and a replay runs the flow again later, when it answers differently, "
        "so the flow can take another branch and diverge; use ctx.now, the recorded time of "
        "the current step"
    )
    chance = (
        "answers differently each time a replay runs the flow again, so the flow can take "
        "another branch and diverge"
    )
    expected = [
        (f"datetime.now() {clock}", "datetime"),
        (f"timezone.now() {clock}", "timezone"),
        (f"time.time() {clock}", "time"),
        (f"random.choice([True, False]) {chance}", "random"),
        (f"random.random() {chance}", "helper"),
    ]
    assert len(warnings) == len(expected)
    for text, marker in expected:
        line = line_of(path, f"# <-{marker}")
        assert any(w.startswith(f"Warning: segflow_config.py:{line}: {text}") for w in warnings), (
            text,
            warnings,
        )
    assert Campaign.objects.filter(name="onboarding", active=True).exists()


def test_warnings_reach_a_push_over_http(tmp_path, users, client, settings):
    from segflow.client import collect_bundle

    settings.SEGFLOW_ALLOW_REMOTE_PUSH = True
    key = create_api_key("ci", "push")[1]
    path = write_config(tmp_path / "team", WARNED)
    answer = client.post(
        "/api/push",
        {"bundle": collect_bundle(str(path)), "dry_run": True},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert answer.status_code == 200
    warned = answer.json()["warnings"]
    assert len(warned) == 5
    assert warned[0].startswith(f"segflow_config.py:{line_of(path, '# <-datetime')}: ")


# ---------------------------------------------------------------------------------------------
# For any flow: exactly the faulty steps are named.

STEPS = sorted(step_signatures())
GOOD_ARGUMENTS = {"send_email": '"welcome"', "wait": "days=1"}


@st.composite
def flow_lines(draw):
    """A flow as a list of (step, how it is written): yielded or not, right or wrong keyword."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from([s for s in STEPS if s in GOOD_ARGUMENTS]),
                st.sampled_from(["yield", "bare", "assigned", "bad keyword"]),
            ),
            min_size=1,
            max_size=8,
        )
    )


@hypothesis_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=flow_lines())
def test_for_any_flow_exactly_the_faulty_steps_are_named(lines):
    body, faulty = [], set()
    for number, (step, how) in enumerate(lines, start=2):
        call = f"rt.{step}({GOOD_ARGUMENTS[step]})"
        if how == "yield":
            body.append(f"    result_{number} = yield {call}")
        elif how == "bare":
            body.append(f"    {call}")
            faulty.add(number)
        elif how == "assigned":
            body.append(f"    result_{number} = {call}")
            faulty.add(number)
        else:
            body.append(f"    yield rt.{step}({GOOD_ARGUMENTS[step]}, colour=1)")
            faulty.add(number)
    source = "def flow(ctx, rt):\n" + "\n".join(body) + "\n    yield rt.wait(days=1)\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "flows.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"flows_{abs(hash(source))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = validate_config(
            {
                "templates": {"welcome": {"subject": "Hi", "html": lambda user: "<p>hi</p>"}},
                "segments": {"s": {"sql": "SELECT u.id FROM users u"}},
                "campaigns": {"c": {"segments": ["s"], "flow": module.flow}},
            },
            base_dir=Path(folder),
        )
        findings = check_flows(config)
        sys.modules.pop(spec.name, None)
    assert {f.line for f in findings} == faulty
    assert all(f.path == "flows.py" and not f.warning for f in findings)
    assert len(findings) == len(faulty)


# ---------------------------------------------------------------------------------------------
# Progress.

MANY_SEGMENTS = """\
def onboarding(ctx, rt):
    yield rt.send_email("welcome")
"""


@pytest.fixture
def many_users(db):
    User.objects.bulk_create(
        User(id=f"user-{n:03}", attributes={"email": f"u{n}@example.com", "n": n})
        for n in range(40)
    )


def config_with_two_segments(folder: Path) -> Path:
    path = write_config(folder, MANY_SEGMENTS)
    text = path.read_text().replace(
        '"segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},',
        '"segments": {"everyone": {"sql": "SELECT u.id FROM users u"}, '
        '"even": {"evaluator": lambda users: users.filter(id__regex=r"[02468]$")}},',
    )
    path.write_text(text)
    return path


PROGRESS_LINE = re.compile(
    r"^Evaluating segments: (\d+)/2 segments, (\d+)/(\d+) ranges \((everyone|even)\), "
    r"(\d+) user\(s\) entered, 0 left, (about \d+:\d\d:\d\d left|done in \d+:\d\d:\d\d)$"
)


def test_a_push_over_many_users_prints_its_progress_in_a_log(tmp_path, many_users, settings):
    settings.SEGFLOW_SEGMENT_CHUNK_USERS = 8  # 40 users: five ranges a segment
    out, err = push(config_with_two_segments(tmp_path / "team"), "--progress-every", "0")
    lines = err.splitlines()
    parsed = [PROGRESS_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m[2]) for m in parsed] == list(range(1, 11))  # a line for each range
    assert {int(m[3]) for m in parsed} == {10}
    assert [int(m[1]) for m in parsed] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    entered = [int(m[5]) for m in parsed]
    assert entered == sorted(entered) and entered[4] == 40 and entered[-1] == 60
    assert parsed[-1][6].startswith("done in") and parsed[0][6].startswith("about")
    assert "\r" not in err and "\x1b" not in err  # plain lines, no terminal control codes
    assert SegmentMembership.objects.count() == 60
    assert "Evaluating" not in out  # stdout keeps the plan alone


def test_a_log_gets_a_line_per_segment_when_ranges_go_by_quickly(tmp_path, many_users, settings):
    settings.SEGFLOW_SEGMENT_CHUNK_USERS = 8
    _, err = push(config_with_two_segments(tmp_path / "team"))  # a line at most every 10 s
    lines = err.splitlines()
    assert len(lines) == 3, lines  # the first range, and each segment as it is done
    assert lines[-1].startswith("Evaluating segments: 2/2 segments, 10/10 ranges")


def test_a_push_whose_users_fit_in_one_range_prints_no_progress(tmp_path, many_users):
    # Two segments, but each is evaluated in one statement: there is nothing to watch.
    _, err = push(config_with_two_segments(tmp_path / "team"), "--progress-every", "0")
    assert err == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar(tmp_path, many_users, settings):
    from segflow.push import push_location

    settings.SEGFLOW_SEGMENT_CHUNK_USERS = 8
    screen = Terminal()
    path = config_with_two_segments(tmp_path / "team")
    with PushProgress(OutputWrapper(screen)) as progress:
        push_location(str(path), progress=progress)
    shown = screen.getvalue()
    assert "Segments 2/2" in shown and "10/10" in shown and "60 user(s) entered" in shown
    assert "\x1b[" in shown  # drawn in place with the terminal's control codes
    assert "Evaluating segments:" not in shown
