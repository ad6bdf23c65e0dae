"""segflow_push: a diff, applied in one transaction; a dry run changes nothing."""

import io

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import Campaign, Cursor
from delivery.models import OutboxEmail
from segflow.models import Push, User
from segflow.push import PushError
from segments.models import Segment, SegmentMembership
from templates.models import EmailTemplate
from transactions.models import Transaction

from .conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from segflow.config import SegflowConfig

def welcome_flow(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    yield rt.send_email("{second}")
    yield rt.wait(days=1)
    yield rt.send_email("bye")

config: SegflowConfig = {{
    "templates": {{
        "welcome": {{"subject": "Welcome", "html": lambda user: "<p>welcome</p>"}},
        "tips": {{"subject": "Tips", "html": lambda user: "<p>tips</p>"}},
        "news": {{"subject": "News", "html": lambda user: "<p>news</p>"}},
        "bye": {{"subject": "Bye", "html": lambda user: "<p>bye</p>"}},
    }},
    "segments": {{
        "pro": {{"sql": "SELECT u.id FROM users u "
                        "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.plan')) = '{plan}'"}},
    }},
    "campaigns": {{{campaigns}}},
    "transactions": {{}},
}}
"""
CAMPAIGN = '"welcome": {"segments": ["pro"], "behavior": "static", "flow": welcome_flow},'


def make_users(*ids, plan="pro"):
    for user_id in ids:
        User.objects.create(
            id=user_id, attributes={"email": f"{user_id}@example.com", "plan": plan}
        )


def config_text(second="tips", plan="pro", campaigns=CAMPAIGN):
    return CONFIG.format(second=second, plan=plan, campaigns=campaigns)


def test_first_push_adds_everything_and_enters_matching_users(write_config, pushed, clock):
    make_users("a", "b")
    make_users("c", plan="free")
    plan = pushed(write_config(config_text()))
    text = plan.render()
    assert "+ pro: sql, 2 user(s) entered, 0 left" in text
    assert "+ welcome: static, 2 user(s) enter" in text
    assert set(EmailTemplate.objects.values_list("name", flat=True)) == {
        "welcome",
        "tips",
        "news",
        "bye",
    }
    assert set(SegmentMembership.objects.values_list("user_id", flat=True)) == {"a", "b"}
    # The push itself sends nothing; the schedule starts the new cursors at once.
    assert sent() == []
    clock.advance_and_tick(seconds=1)
    assert sorted(sent()) == ["welcome", "welcome"]


def test_pushing_the_same_config_twice_changes_nothing_and_says_so(write_config, pushed, clock):
    make_users("a")
    config = write_config(config_text())
    pushed(config)
    pushes, emails = Push.objects.count(), OutboxEmail.objects.count()
    plan = pushed(config)
    assert not plan.has_changes
    assert plan.render().startswith("Nothing to change")
    assert (Push.objects.count(), OutboxEmail.objects.count()) == (pushes, emails)


def test_dry_run_prints_the_plan_and_changes_nothing(write_config, pushed, clock):
    make_users("a", "b")
    plan = pushed(write_config(config_text()), dry_run=True)
    assert "+ welcome: static, 2 user(s) enter" in plan.render()
    assert "dry run" in plan.render()
    assert not Segment.objects.exists() and not Campaign.objects.exists()
    assert not Cursor.objects.exists() and not OutboxEmail.objects.exists()
    assert mail.outbox == []


def test_changed_segment_is_re_evaluated_and_reported(write_config, pushed, clock):
    make_users("a")
    make_users("f", plan="free")
    pushed(write_config(config_text()))
    plan = pushed(write_config(config_text(plan="free")))
    assert "~ pro: sql, 1 user(s) entered, 1 left" in plan.render()
    assert list(SegmentMembership.objects.values_list("user_id", flat=True)) == ["f"]


def test_removed_campaign_ends_its_cursors(write_config, pushed, clock):
    make_users("a", "b")
    pushed(write_config(config_text()))
    clock.advance_and_tick(seconds=1)
    plan = pushed(write_config(config_text(campaigns="")))
    assert "- welcome: removed, 2 active cursor(s) ended" in plan.render()
    assert set(Cursor.objects.values_list("status", flat=True)) == {Cursor.Status.ENDED}
    assert not Campaign.objects.get(name="welcome").active
    clock.advance_and_tick(days=3)
    assert sent() == ["welcome", "welcome"]  # nothing more


def test_a_removed_template_and_transaction_are_removed(write_config, pushed, clock):
    pushed(
        write_config(
            config_text().replace(
                '"transactions": {}',
                '"transactions": {"receipt": {"event": "purchase", "subject": "Thanks", '
                '"html": lambda u, e: "<p>ok</p>"}}',
            )
        )
    )
    assert Transaction.objects.filter(name="receipt").exists()
    plan = pushed(
        write_config(
            config_text().replace(
                '"news": {"subject": "News", "html": lambda user: "<p>news</p>"},', ""
            )
        )
    )
    assert "- news" in plan.render() and "- receipt" in plan.render()
    assert not Transaction.objects.exists()
    assert not EmailTemplate.objects.filter(name="news").exists()


def test_changed_flow_replays_users_whose_steps_still_match(write_config, pushed, clock):
    make_users("a")
    pushed(write_config(config_text()))
    clock.advance_and_tick(hours=2)  # welcome sent, waiting a day
    # A later step changes: a's recorded steps (welcome, wait) still replay on the new code.
    plan = pushed(write_config(config_text(second="news")))
    assert (
        "1 user(s) in flight, on_change='end': 1 continue on the new flow, 0 restart from the "
        "top, 0 stay on version 1, 0 end" in plan.render()
    )
    clock.advance_and_tick(days=1)
    assert sent("a") == ["welcome", "news"]


def test_changed_flow_ends_cursors_that_diverge_instead_of_sending_the_wrong_thing(
    write_config, pushed, clock
):
    make_users("a")
    pushed(write_config(config_text()))
    clock.advance_and_tick(days=1, hours=1)  # welcome, wait, tips sent; waiting
    assert sent("a") == ["welcome", "tips"]
    plan = pushed(write_config(config_text(second="news")))
    assert (
        "1 user(s) in flight, on_change='end': 0 continue on the new flow, 0 restart from the "
        "top, 0 stay on version 1, 1 end" in plan.render()
    )
    cursor = Cursor.objects.get(user_id="a")
    assert cursor.status == Cursor.Status.DIVERGED
    assert "send_email('news')" in cursor.end_reason and "send_email('tips')" in cursor.end_reason
    clock.advance_and_tick(days=2)
    assert sent("a") == ["welcome", "tips"]


def test_a_segment_whose_sql_fails_stops_the_push_and_changes_nothing(write_config, pushed, clock):
    broken = config_text().replace("FROM users u ", "FROM no_such_table u ")
    with pytest.raises(PushError, match="segment 'pro': the query failed"):
        pushed(write_config(broken))
    assert not Segment.objects.exists() and not EmailTemplate.objects.exists()


def test_a_segment_query_without_an_id_column_is_refused(write_config, pushed, clock):
    broken = config_text().replace("SELECT u.id FROM", "SELECT u.attributes FROM")
    with pytest.raises(PushError, match="must return a column named `id`"):
        pushed(write_config(broken))


def test_the_command_prints_the_plan_and_dry_run_changes_nothing(write_config, settings, clock):
    make_users("a")
    config = write_config(config_text())
    out = io.StringIO()
    call_command("segflow_push", "--dry-run", "--config", config.location, stdout=out)
    assert "+ welcome: static, 1 user(s) enter" in out.getvalue()
    assert not Campaign.objects.exists()
    out = io.StringIO()
    call_command("segflow_push", "--config", config.location, stdout=out)
    assert "Pushed." in out.getvalue()
    out = io.StringIO()
    call_command("segflow_push", "--config", config.location, stdout=out)
    assert "Nothing to change" in out.getvalue()


def test_the_command_names_the_config_mistake(write_config, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        "def f(ctx, rt):\n    yield rt.wait(days=1)\n"
        "config = {'segments': {}, 'campaigns': {'c': {'segments': ['x'], 'flow': f}}}\n"
    )
    with pytest.raises(CommandError, match="campaigns.c.segments: unknown segment 'x'"):
        call_command("segflow_push", "--config", str(path))


def test_a_template_that_does_not_compile_stops_the_push(write_config, pushed, clock):
    config = write_config(
        config_text().replace('"html": lambda user: "<p>bye</p>"', '"html": "emails/bye.html"'),
        emails={"emails/bye.html": "{% if user.name %}Bye {{ user.name }}</p>"},
    )
    with pytest.raises(PushError, match=r"templates.bye: 'bye' does not compile: .*Unclosed tag"):
        pushed(config)
    assert not EmailTemplate.objects.exists()
