"""The admin site: segflow's operator console.

Its home shows the health of the system (segflow/health.py) above the list of pages; the list
puts segflow's own pages first, calls Django's logins "Staff accounts" (so that "Users" always
means segflow's users) and puts Celery beat's schedule, read-only, last. It also serves the test
send of an email template (`test_send`), which needs the running config.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse

APP_ORDER = [
    "segflow",
    "campaigns",
    "segments",
    "delivery",
    "email_templates",
    "transactions",
    "auth",
    "django_celery_beat",
]
RENAMED_APPS = {
    "auth": "Staff accounts (admin logins)",
    "django_celery_beat": "Celery beat's schedule (read-only; segflow keeps it)",
}
RENAMED_MODELS = {("auth", "User"): "Staff accounts", ("auth", "Group"): "Staff groups"}


class SegflowAdminSite(admin.AdminSite):
    site_header = "segflow"
    site_title = "segflow admin"
    index_title = "Health, users, segments, campaigns and email"
    site_url = None  # segflow has no public site to link to
    index_template = "admin/segflow_index.html"

    def index(self, request, extra_context=None):
        from .health import health

        return super().index(request, {"health": health(), **(extra_context or {})})

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        for app in apps:
            app["name"] = RENAMED_APPS.get(app["app_label"], app["name"])
            for model in app["models"]:
                name = RENAMED_MODELS.get((app["app_label"], model["object_name"]))
                if name:
                    model["name"] = name
        rank = {label: i for i, label in enumerate(APP_ORDER)}
        return sorted(apps, key=lambda app: rank.get(app["app_label"], len(APP_ORDER)))

    def get_urls(self):
        return [
            path("segflow/test-send/", self.admin_view(self.test_send), name="segflow_test_send"),
            *super().get_urls(),
        ]

    def test_send(self, request):
        """Send a template, rendered for a chosen user, to the signed-in staff member."""
        from delivery.test_send import TestSendError, send_test
        from templates.models import EmailTemplate

        from .live_config import live_config

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        name = request.POST.get("template", "")
        template = EmailTemplate.objects.filter(name=name).first()
        back = (
            reverse("admin:email_templates_emailtemplate_change", args=[template.pk])
            if template
            else reverse("admin:index")
        )
        if not request.user.has_perm("delivery.view_outboxemail"):
            messages.error(request, "Sending a test needs the right to see the outbox.")
            return HttpResponseRedirect(back)
        try:
            row = send_test(
                live_config.sync(),
                name,
                request.POST.get("user_id", "").strip(),
                request.user.email,
                sent_by=request.user.get_username(),
            )
        except TestSendError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(back)
        messages.success(
            request,
            f"Test of {name!r} rendered for {row.user_id!r} sent to {row.to_address}, "
            "marked as a test in the outbox.",
        )
        return HttpResponseRedirect(reverse("admin:delivery_outboxemail_change", args=[row.pk]))
