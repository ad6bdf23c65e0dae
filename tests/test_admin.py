"""The admin as an operator sees it: every page opens, code-defined objects show their code and
cannot be edited there, and what segflow sent can be read."""

from __future__ import annotations

from io import StringIO
from urllib.parse import quote as urlquote

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import reverse
from django.utils.html import escape
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from campaigns.models import Campaign, Cursor
from delivery.models import OutboxEmail, Suppression, Unsubscription
from delivery.policy import suppress
from delivery.unsubscribe import unsubscribe
from segflow.models import ApiKey, Event, User
from segments.models import Segment, SegmentMembership
from templates.models import EmailTemplate
from transactions.models import Transaction

from .conftest import START

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = "<script>alert('owned')</script>"
ODD_ID = "o'brien & co?x=1#<b>_2F"


def admin_url(model, view: str, *args) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def change_url(obj) -> str:
    return admin_url(type(obj), "change", quote(obj.pk))


@pytest.fixture
def world(api, clock, pushed):
    """The example config pushed, and users who got emails, entered campaigns and bought."""
    pushed()
    call_command("segflow_push", "--dry-run", stdout=StringIO())  # an attempt in the audit
    for user_id, name in (("jane", "Jane"), ("mallory", SCRIPT), (ODD_ID, "Odd")):
        response = api.put(
            f"/api/users/{urlquote(user_id, safe='')}",
            {
                "attributes": {
                    "email": "x@example.com",
                    "name": name,
                    "lastLoginAt": START.isoformat(),
                }
            },
            format="json",
        )
        assert response.status_code == 201, response.content
    response = api.post(
        "/api/users/jane/events",
        {"name": "purchase", "attributes": {"orderId": "ord_1", "amount": 1500}},
        format="json",
    )
    assert response.status_code == 201
    # An unsubscribe and a suppressed address, as the delivery pages show them.
    unsubscribe("mallory", Unsubscription.Method.LINK)
    suppress("gone@example.com", Suppression.Reason.HARD_BOUNCE, detail="550 no such user")
    # Rows of the other apps' admin pages, so that every page has something to show.
    Group.objects.create(name="marketing")
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="demo", task="segflow.tasks.tick", interval=every_minute)
    CrontabSchedule.objects.create(minute="0", hour="9")
    SolarSchedule.objects.create(event="sunrise", latitude=48.85, longitude=2.35)
    ClockedSchedule.objects.create(clocked_time=START)


def test_every_admin_page_opens(admin_client, world):
    assert admin_client.get(reverse("admin:index")).status_code == 200
    for model in admin.site._registry:
        label = model._meta.label
        changelist = admin_client.get(admin_url(model, "changelist"))
        assert changelist.status_code == 200, label
        obj = model._default_manager.order_by("pk").first()
        assert obj is not None, f"the setup made no {label} to open"
        change = admin_client.get(change_url(obj))
        assert change.status_code == 200, label
        assert escape(str(obj)) in change.content.decode(), label


def test_the_lists_show_what_happened(admin_client, world):
    users = admin_client.get(admin_url(User, "changelist")).content.decode()
    assert "jane" in users and "x@example.com" in users
    outbox = admin_client.get(admin_url(OutboxEmail, "changelist")).content.decode()
    assert "campaign onboarding, step 1" in outbox
    assert "transaction purchase-confirmation" in outbox
    campaigns = admin_client.get(admin_url(Campaign, "changelist")).content.decode()
    assert "onboarding" in campaigns and "winback-campaign" in campaigns
    segments = admin_client.get(admin_url(Segment, "changelist")).content.decode()
    assert "big-spenders" in segments and "new-users" in segments


@pytest.mark.parametrize(
    "model, name, code",
    [
        (Campaign, "onboarding", "rt.send_email"),
        (Campaign, "winback-campaign", "rt.wait(days=2**i)"),
        (Segment, "big-spenders", "SUM(JSON_EXTRACT(e.attributes"),
        (Segment, "new-users", "created_at__gte"),
        (EmailTemplate, "welcome", "Thanks for joining us {{ user.name }}!"),
        (Transaction, "purchase-confirmation", "Order Confirmed"),
    ],
)
def test_code_defined_objects_show_their_source(admin_client, world, model, name, code):
    page = admin_client.get(change_url(model.objects.get(name=name)))
    assert page.status_code == 200
    assert code in page.content.decode()


@pytest.mark.parametrize("model", [Campaign, Segment, EmailTemplate, Transaction])
def test_code_defined_objects_cannot_be_added_changed_or_deleted(admin_client, world, model):
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    before_count = model.objects.count()
    assert admin_client.post(admin_url(model, "add"), {"name": "sneaky"}).status_code == 403
    assert model.objects.count() == before_count

    obj = model.objects.order_by("pk").first()
    before = model.objects.filter(pk=obj.pk).values().get()
    page = admin_client.get(change_url(obj)).content.decode()
    assert 'name="_save"' not in page  # a page to read, with no save button
    response = admin_client.post(
        change_url(obj), {"name": "renamed", "source": "hacked", "active": "", "_save": "Save"}
    )
    assert response.status_code == 403
    assert model.objects.filter(pk=obj.pk).values().get() == before

    assert admin_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


@pytest.mark.parametrize("model", [Event, OutboxEmail, Cursor, SegmentMembership, ApiKey])
def test_rows_the_workers_write_cannot_be_added_or_changed(admin_client, world, model):
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    obj = model.objects.order_by("pk").first()
    before = model.objects.filter(pk=obj.pk).values().get()
    assert admin_client.post(change_url(obj), {"_save": "Save"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).values().get() == before


def test_an_outbox_row_shows_the_rendered_email_in_a_sandbox(admin_client, world):
    row = OutboxEmail.objects.get(user_id="jane", template_name="welcome")
    page = admin_client.get(change_url(row)).content.decode()
    assert "Welcome Jane!" in page
    assert '<iframe sandbox="" srcdoc="' in page
    assert "Thanks for joining us Jane!" in page
    # The email's markup is shown inside the sandbox, not run as part of the admin page.
    assert 'href="https://example.com/get-started"' not in page
    assert "https://example.com/get-started" in page

    confirmation = OutboxEmail.objects.get(user_id="jane", transaction_name="purchase-confirmation")
    page = admin_client.get(change_url(confirmation)).content.decode()
    assert "Order Confirmed, Jane!" in page and "ord_1" in page


def test_markup_from_users_is_shown_as_text(admin_client, world):
    welcome = OutboxEmail.objects.get(user_id="mallory", template_name="welcome")
    pages = {
        change_url(User.objects.get(pk="mallory")): True,  # her attributes
        change_url(welcome): True,  # the subject and the email
        admin_url(OutboxEmail, "changelist"): True,  # the subject
        admin_url(User, "changelist"): False,
    }
    for url, shows_her_name in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        assert SCRIPT not in page, url
        assert ("&lt;script&gt;alert(" in page) == shows_her_name, url


def test_a_user_with_an_odd_id_has_a_page(admin_client, world):
    user = User.objects.get(pk=ODD_ID)
    page = admin_client.get(change_url(user))
    assert page.status_code == 200
    assert "o&#x27;brien &amp; co?x=1#&lt;b&gt;_2F" in page.content.decode()


def test_deleting_a_user_in_the_admin_removes_everything_about_them(admin_client, world):
    jane = User.objects.get(pk="jane")
    assert Event.objects.filter(user=jane).exists()
    assert OutboxEmail.objects.filter(user=jane).exists()
    assert Cursor.objects.filter(user=jane).exists()
    assert SegmentMembership.objects.filter(user=jane).exists()

    confirm = admin_client.get(admin_url(User, "delete", quote(jane.pk)))
    assert confirm.status_code == 200
    # Her events, emails and cursors go with her: the page must not ask for rights to delete those.
    assert "permission to delete" not in confirm.content.decode()
    response = admin_client.post(admin_url(User, "delete", quote(jane.pk)), {"post": "yes"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not User.objects.filter(pk="jane").exists()
    assert not Event.objects.filter(user_id="jane").exists()
    assert not OutboxEmail.objects.filter(user_id="jane").exists()
    assert not Cursor.objects.filter(user_id="jane").exists()
    assert not SegmentMembership.objects.filter(user_id="jane").exists()
    assert User.objects.filter(pk="mallory").exists()


def test_revoking_a_key_in_the_admin_locks_its_holder_out(admin_client, world, api):
    assert api.get("/api/users/jane").status_code == 200
    key = ApiKey.objects.get()
    page = admin_client.get(change_url(key)).content.decode()
    assert key.key_hash not in page  # only the prefix is ever shown
    assert key.prefix in page

    response = admin_client.post(
        admin_url(ApiKey, "changelist"),
        {"action": "revoke", admin.helpers.ACTION_CHECKBOX_NAME: [key.pk]},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api.get("/api/users/jane").status_code == 401


def test_the_admin_needs_a_staff_login(client, world):
    for model in (User, Campaign, OutboxEmail):
        response = client.get(admin_url(model, "changelist"))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
