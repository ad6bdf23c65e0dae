"""The admin's console pages without a browser: what they show, that their work does not grow
with the data, the test send's refusals, and the tidy-ups (staff accounts, beat read-only)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User as StaffAccount
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from campaigns.models import Campaign, Cursor
from delivery.models import OutboxEmail
from segflow.models import User
from segflow.schedule import TICK_TASK_NAME, ensure_periodic_tasks
from segments.models import Segment
from templates.models import EmailTemplate

from .email_support import EMAILS, emit, put_user

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from segflow.config import SegflowConfig

def drip(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    if ctx.user.plan == "broken":
        raise RuntimeError("broken plan")
    yield rt.send_email("tips")
    yield rt.wait(days=3)

config: SegflowConfig = {
    "templates": {
        "welcome": {"subject": lambda user: f"Welcome {user.name}!", "html": "emails/welcome.html"},
        "tips": {"subject": "Tips", "html": "emails/tips.html"},
    },
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"drip": {"segments": ["everyone"], "behavior": "static", "flow": drip}},
    "transactions": {
        "receipt": {"event": "purchase", "subject": "Your receipt", "html": "emails/receipt.html"},
    },
}
"""


@pytest.fixture
def world(api, clock, write_config, pushed):
    pushed(write_config(CONFIG, EMAILS))
    return clock


def add_users(api, first: int, count: int) -> None:
    for n in range(first, first + count):
        plan = "broken" if n % 5 == 0 else "free"
        put_user(api, f"user{n:03}", email=f"user{n:03}@example.com", name=f"U{n}", plan=plan)


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(captured)


def test_the_pages_do_the_same_work_whatever_the_number_of_users(admin_client, api, world):
    drip = Campaign.objects.get(name="drip")
    everyone = Segment.objects.get(name="everyone")
    pages = [
        reverse("admin:index"),
        reverse("admin:campaigns_campaign_changelist"),
        reverse("admin:campaigns_campaign_change", args=[drip.pk]),
        reverse("admin:segments_segment_change", args=[everyone.pk]),
        reverse("admin:segments_segment_changelist"),
    ]
    add_users(api, 1, 4)
    world.advance_and_tick(days=1, hours=1)
    before = [min(queries(admin_client, url) for _ in range(2)) for url in pages]
    add_users(api, 100, 40)
    world.advance_and_tick(days=1, hours=1)
    assert [min(queries(admin_client, url) for _ in range(2)) for url in pages] == before


def test_the_campaign_page_says_what_the_database_says(admin_client, api, world):
    add_users(api, 1, 10)
    put_user(api, "nomail", name="No address")
    world.advance_and_tick(days=1, hours=1)
    drip = Campaign.objects.get(name="drip")
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[drip.pk]))
    html = page.content.decode()

    def figure(status):
        found = re.search(rf'data-status="{status}"><b><a href="([^"]+)">([\d,]+)</a>', html)
        return found[1], int(found[2].replace(",", ""))

    cursors = Cursor.objects.filter(campaign=drip)
    for status in ("active", "completed", "failed"):
        url, n = figure(status)
        assert n == cursors.filter(status=status).count(), status
        listed = admin_client.get(url.replace("&amp;", "&"))
        assert f"{n} result" in listed.content.decode() or n == 0
    assert figure("failed")[1] == 2
    assert "waiting 3 days after &quot;tips&quot;" in html
    assert "line 10: yield rt.wait(days=3)" in html
    assert "RuntimeError(&#x27;broken plan&#x27;)" in html
    assert "the user has no email address" in html
    # The chart is drawn on the server: an SVG, its bars links.
    assert "<svg" in html and "users entered" in html


def test_the_campaign_list_marks_failures(admin_client, api, world):
    add_users(api, 1, 5)
    world.advance_and_tick(days=1, hours=1)
    page = admin_client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    assert "sf-failmark" in page and "1 failed" in page


def test_the_home_page_counts_and_warns(admin_client, api, world):
    add_users(api, 1, 5)
    emit(api, "user001", "purchase", orderId="o1")
    world.advance_and_tick(hours=2)
    page = admin_client.get(reverse("admin:index")).content.decode()
    sent = OutboxEmail.objects.filter(sent_at__isnull=False).count()
    assert re.search(rf'id="sf-sent-24h"><b><a [^>]+>{sent}</a>', page)
    assert 'id="sf-tick-late"' not in page and "on time" in page
    world.advance(minutes=5)
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="sf-tick-late"' in page and "The schedule is late" in page
    # Staff accounts, not a second "Users"; beat's schedule last, read-only.
    assert page.index("Staff accounts (admin logins)") < page.index("Celery beat&#x27;s schedule")


def test_a_segments_members_are_searchable_and_paged(admin_client, api, world):
    add_users(api, 1, 60)
    everyone = Segment.objects.get(name="everyone")
    url = reverse("admin:segments_segment_change", args=[everyone.pk])
    page = admin_client.get(url).content.decode()
    assert re.search(r'id="sf-members-now"><b><a [^>]+>60</a>', page)
    assert page.count('href="/admin/segflow/user/user0') == 50
    following = re.search(r'href="(\?after=[^"#]+)#sf-members" id="sf-members-next"', page)[1]
    rest = admin_client.get(url + following).content.decode()
    assert rest.count('href="/admin/segflow/user/user0') == 10
    found = admin_client.get(url + "?q=user05").content.decode()
    assert found.count('href="/admin/segflow/user/user0') == 10  # user050 .. user059
    assert "drip" in page and "its audience" in page


def test_a_users_timeline_pages_back_in_time(admin_client, api, world):
    put_user(api, "jane", email="jane@example.com", name="Jane")
    for n in range(60):
        emit(api, "jane", "page_view", n=n)
    url = reverse("admin:segflow_user_change", args=["jane"])
    first = admin_client.get(url).content.decode()
    assert first.count("data-kind=") == 50
    assert 'id="sf-older"' in first
    second = admin_client.get(url + "?page=1").content.decode()
    assert second.count("data-kind=") == 60 + 4 - 50  # events, segment, campaign, step, email
    assert "event page_view" in second
    assert 'id="sf-older"' not in second


def test_a_test_send_needs_an_address_and_a_user(client, api, world):
    put_user(api, "jane", email="jane@example.com", name="Jane")
    welcome = EmailTemplate.objects.get(name="welcome")
    staff = StaffAccount.objects.create_superuser("ops", "", "pw")
    client.force_login(staff)
    url = reverse("admin:segflow_test_send")
    response = client.post(url, {"template": "welcome", "user_id": "jane"}, follow=True)
    assert "has no email address" in response.content.decode()
    staff.email = "ops@acme.test"
    staff.save()
    response = client.post(url, {"template": "welcome", "user_id": "nobody"}, follow=True)
    assert "no user &#x27;nobody&#x27;" in response.content.decode()
    assert not OutboxEmail.objects.filter(key__startswith="test:").exists()
    assert client.get(url).status_code == 405  # a send is a POST
    response = client.post(url, {"template": "welcome", "user_id": "jane"})
    row = OutboxEmail.objects.get(key__startswith="test:")
    assert response["Location"] == reverse("admin:delivery_outboxemail_change", args=[row.pk])
    assert (row.to_address, row.subject, row.unsubscribe_url) == (
        "ops@acme.test",
        "[Test] Welcome Jane!",
        "",
    )
    template_page = client.get(
        reverse("admin:email_templates_emailtemplate_change", args=[welcome.pk])
    )
    assert "ops@acme.test" in template_page.content.decode()


def test_beats_schedule_is_read_only_and_follows_the_setting(admin_client, world, settings):
    task = PeriodicTask.objects.get(name=TICK_TASK_NAME)
    page = admin_client.get(reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    response = admin_client.post(
        reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]),
        {"name": "x", "_save": "Save"},
    )
    assert response.status_code == 403
    settings.SEGFLOW_TICK_SECONDS = 5
    ensure_periodic_tasks()
    task.refresh_from_db()
    assert (task.interval.every, task.interval.period) == (5, IntervalSchedule.SECONDS)
    assert task.expire_seconds == 50


def test_a_skipped_email_reads_as_something(admin_client, api, world, settings):
    settings.SEGFLOW_WAIT_FOR_ADDRESS_SECONDS = 0  # skipped at once, not waiting for an address
    put_user(api, "nomail", name="No address")
    row = OutboxEmail.objects.get(user_id="nomail")
    assert str(row) == "welcome to nomail (skipped, no subject)"
    listing = admin_client.get(reverse("admin:delivery_outboxemail_changelist")).content.decode()
    assert "(none: skipped before it was rendered)" in listing
    assert "&#x27;&#x27;" not in listing


def test_hourly_snapshots_and_the_tick_are_kept(api, world):
    from segflow import tallies
    from segments.models import SegmentSnapshot

    world.advance_and_tick(hours=3)
    assert tallies.last_beat("tick") == world.now
    segments = Segment.objects.count()
    # The first tick after the push counts every segment, then every hour.
    assert SegmentSnapshot.objects.filter(occasion="push").count() == segments
    assert SegmentSnapshot.objects.filter(occasion="hourly").count() >= 2 * segments
    assert User.objects.count() == 0
    assert world.now - tallies.last_beat("segment snapshots") < timedelta(hours=1)
