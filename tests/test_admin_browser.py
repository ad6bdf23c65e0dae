"""The admin as an operator uses it, in a real browser (Chromium driven by Playwright).

A scenario runs through the API and the schedule; then the browser signs in, checks that the
campaign page's funnel says what the database says, follows a failed count to its cursors and a
cursor to its traceback, reads a user's timeline and a segment's members, and sends a test email
that it then finds in the outbox. Every page visited is kept as a screenshot in var/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from anymail.signals import AnymailTrackingEvent, EventType
from django.contrib.auth.models import User as StaffAccount
from django.core import mail
from django.utils import timezone

from campaigns.models import Campaign, Cursor
from delivery.models import OutboxEmail
from delivery.tracking import handle_tracking_event
from segflow.tallies import hour_of
from segments.models import Segment, SegmentMembership

from .conftest import Clock
from .email_support import EMAILS, emit, put_user

CHROMIUM = os.environ.get("SEGFLOW_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
]

CONFIG = """
from segflow.config import SegflowConfig

def onboarding(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    if ctx.user.plan == "broken":
        check_plan(ctx.user.plan)
    yield rt.send_email("tips")
    yield rt.wait(days=3)
    yield rt.send_email("tips")

def check_plan(plan):
    raise ValueError(f"no such plan: {plan}")

config: SegflowConfig = {
    "templates": {
        "welcome": {"subject": lambda user: f"Welcome {user.name}!", "html": "emails/welcome.html"},
        "tips": {"subject": "Three tips for your first week", "html": "emails/tips.html"},
    },
    "segments": {
        "everyone": {"sql": "SELECT u.id FROM users u"},
        "buyers": {"sql": "SELECT e.user_id AS id FROM events e WHERE e.name = 'purchase'"},
    },
    "campaigns": {
        "onboarding": {"segments": ["everyone"], "behavior": "static", "flow": onboarding},
    },
    "transactions": {
        "receipt": {"event": "purchase", "subject": "Your receipt", "html": "emails/receipt.html"},
    },
}
"""
PASSWORD = "browser-test-password"


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an event loop running in this thread; the test's own database
    # calls are synchronous all the same.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1366, "height": 768}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky menu is drawn where the view is
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def scenario(api, write_config, pushed, settings):
    """Twelve users through onboarding, eight of them a day before the others: two have no
    address, two hit a bug in the flow; some buy; the schedule ticks all along; the provider
    reports on a few emails."""
    # The clock starts now, so that the browser's session cookie is not already expired.
    clock = Clock(timezone.now().replace(microsecond=0))
    try:
        pushed(write_config(CONFIG, EMAILS))
        for n in range(1, 13):
            if n == 9:  # the last four come a day later
                clock.advance_and_tick(hours=30)
            attributes = {"name": f"User {n}", "plan": "broken" if n in (3, 4) else "free"}
            if n not in (6, 11):
                attributes["email"] = f"user{n:02}@example.com"
            put_user(api, f"user{n:02}", **attributes)
        for n in (1, 2, 3):
            emit(api, f"user{n:02}", "purchase", orderId=f"ord_{n}", amount=20 * n)
        clock.advance_and_tick(hours=6)
        for row in OutboxEmail.objects.filter(status="sent").order_by("pk")[:6]:
            for kind in (EventType.DELIVERED, EventType.OPENED):
                handle_tracking_event(
                    AnymailTrackingEvent(
                        event_type=kind,
                        recipient=row.to_address,
                        metadata={"segflow_outbox_id": str(row.pk)},
                    ),
                    "Postmark",
                )
        StaffAccount.objects.create_superuser("operator", "operator@acme.test", PASSWORD)
        yield clock
    finally:
        clock.stop()


def sign_in(page) -> None:
    page.goto("/admin/login/?next=/admin/")
    shot(page, "00-sign-in")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def sent_in_the_last_day():
    """What "sent in the last 24 hours" counts: sends by the hour, from 23 hours before this one."""
    return OutboxEmail.objects.filter(sent_at__gte=hour_of(timezone.now() - timedelta(hours=23)))


def number(text: str) -> int:
    return int(re.sub(r"[^\d]", "", text))


def test_the_campaign_page_tells_what_the_database_says(page, scenario):
    sign_in(page)
    assert page.locator("#sf-health").is_visible()
    assert number(page.inner_text("#sf-sent-24h b")) == sent_in_the_last_day().count()
    assert number(page.inner_text("#sf-cursors-failed b")) == 2
    shot(page, "01-home")

    page.click("#content-main th[scope=row] a:text-is('Campaigns')")
    page.wait_for_url("**/campaigns/campaign/")
    row = page.locator("#result_list tbody tr", has_text="onboarding")
    assert "⚠" in row.inner_text()  # the campaign has failures
    shot(page, "02-campaign-list")

    row.locator("th a").click()
    onboarding = Campaign.objects.get(name="onboarding")
    cursors = Cursor.objects.filter(campaign=onboarding)
    assert number(page.inner_text("#sf-funnel .sf-figure >> nth=0")) == cursors.count() == 12
    for status in ("active", "completed", "exited", "failed", "diverged"):
        shown = number(page.inner_text(f'#sf-funnel [data-status="{status}"] b'))
        assert shown == cursors.filter(status=status).count(), status
    # Where the active users are: by step, named, with the line of the flow.
    for step_row in page.locator("#sf-steps tbody tr").all():
        step = int(step_row.get_attribute("data-step"))
        users = number(step_row.locator("td >> nth=3").inner_text())
        assert users == cursors.filter(status="active", step_count=step).count()
    waiting = page.locator("#sf-steps tbody tr", has_text="waiting 3 days").inner_text()
    assert 'after "tips"' in waiting and "yield rt.wait(days=3)" in waiting
    waiting = page.locator("#sf-steps tbody tr", has_text="waiting 1 day").inner_text()
    assert 'after "welcome"' in waiting and "yield rt.wait(days=1)" in waiting
    # Emails by template.
    welcome = page.locator('#sf-emails tr[data-template="welcome"] td').all_inner_texts()
    header = [h.lower() for h in page.locator("#sf-emails thead th").all_inner_texts()]
    figures = dict(zip(header[1:], map(number, welcome[1:]), strict=True))
    rows = OutboxEmail.objects.filter(campaign_name="onboarding", template_name="welcome")
    assert figures["sent"] == rows.filter(status="sent").count() == 10
    assert figures["skipped"] == rows.filter(status="skipped").count() == 2
    assert figures["opened"] == rows.filter(opened_at__isnull=False).count()
    assert page.locator("#sf-emails", has_text="the user has no email address").is_visible()
    assert page.locator("#sf-days svg rect").count() > 0
    shot(page, "03-campaign")

    # A failed count leads to its cursors, and a cursor to its traceback.
    page.click("#sf-errors tbody tr >> nth=0 >> td >> nth=2 >> a")
    page.wait_for_url("**/campaigns/cursor/**")
    assert page.locator("#result_list tbody tr").count() == 2
    shot(page, "04-failed-cursors")
    page.click("#result_list tbody tr >> nth=0 >> th a")
    traceback = page.inner_text("#sf-traceback")
    assert "ValueError: no such plan: broken" in traceback
    assert re.search(r"\n    check_plan\(ctx\.user\.plan\)", traceback)  # indentation kept
    assert page.locator("#sf-cursor-steps li").count() >= 3
    shot(page, "05-failed-cursor")


def test_a_user_timeline_and_a_segments_members(page, scenario):
    sign_in(page)
    page.goto("/admin/segflow/user/user01/change/")
    timeline = page.locator("#sf-timeline")
    text = timeline.inner_text()
    for expected in (
        "event purchase",
        'entered segment "buyers"',
        'entered campaign "onboarding"',
        'email "Welcome User 1!"',
        'email "Your receipt"',
        "onboarding, step 2: wait 1 day",
        "email opened",
    ):
        assert expected in text, expected
    times = timeline.locator("time").evaluate_all("els => els.map(e => e.dateTime)")
    assert times == sorted(times, reverse=True)  # newest first
    shot(page, "06-user-timeline")

    everyone = Segment.objects.get(name="everyone")
    page.goto(f"/admin/segments/segment/{everyone.pk}/change/")
    members = SegmentMembership.objects.filter(segment=everyone).count()
    assert number(page.inner_text("#sf-members-now b")) == members == 12
    assert page.locator("#sf-used-by", has_text="onboarding").is_visible()
    page.fill("#sf-members input[name=q]", "user1")
    page.click("#sf-members input[type=submit]")
    page.wait_for_url("**q=user1**")
    ids = page.locator("#sf-members tbody tr td:first-child").all_inner_texts()
    assert ids == ["user10", "user11", "user12"]
    shot(page, "07-segment")


def test_a_test_send_reaches_the_staff_member_and_is_marked_in_the_outbox(page, scenario):
    sign_in(page)
    page.goto("/admin/email_templates/emailtemplate/")
    page.click("#result_list a:text-is('welcome')")
    page.fill("#sf-test-user", "user05")
    shot(page, "08-template-test-send")
    page.click("#sf-test-submit")
    page.wait_for_url("**/delivery/outboxemail/*/change/")
    assert "test send" in page.inner_text("#content")
    row = OutboxEmail.objects.get(key__startswith="test:")
    assert (row.to_address, row.user_id, row.status) == ("operator@acme.test", "user05", "sent")
    assert [m.subject for m in mail.outbox if m.to == ["operator@acme.test"]] == [
        "[Test] Welcome User 5!"
    ]
    shot(page, "09-test-send-in-outbox")

    page.goto("/admin/delivery/outboxemail/?test=yes")
    assert page.locator("#result_list tbody tr").count() == 1
    shot(page, "10-outbox")
    # Not the user's email: their timeline does not show it, and no figure counts it.
    page.goto("/admin/segflow/user/user05/change/")
    assert "[Test]" not in page.inner_text("#sf-timeline")
    page.goto("/admin/")
    assert number(page.inner_text("#sf-sent-24h b")) == sent_in_the_last_day().count() - 1


def test_the_home_page_warns_when_the_schedule_is_late(page, scenario):
    scenario.advance(minutes=10)
    sign_in(page)
    assert page.locator("#sf-tick-late").is_visible()
    shot(page, "11-home-schedule-late")


@pytest.mark.parametrize(
    "name, url",
    [
        ("12-users", "/admin/segflow/user/"),
        ("13-events", "/admin/segflow/event/"),
        ("14-segments", "/admin/segments/segment/"),
        ("15-cursors", "/admin/campaigns/cursor/"),
        ("16-outbox-all", "/admin/delivery/outboxemail/"),
        ("17-memberships", "/admin/segments/segmentmembership/"),
        ("18-staff-accounts", "/admin/auth/user/"),
        ("19-pushes", "/admin/segflow/push/"),
        ("20-beat-tasks", "/admin/django_celery_beat/periodictask/"),
    ],
)
def test_every_list_fits_a_1366_pixel_screen(page, scenario, name, url):
    sign_in(page)
    page.goto(url)
    assert page.locator("#result_list, #changelist").first.is_visible()
    shot(page, name)
    # Nothing wider than the window, and no table wider than its box: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366, name
    overflow = "[...document.querySelectorAll('.results')].some(e => e.scrollWidth > e.clientWidth)"
    assert not page.evaluate(overflow), name
