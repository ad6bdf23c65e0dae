import json

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group
from django.contrib.auth.models import User as StaffAccount
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from campaigns.admin import CampaignAdmin
from campaigns.models import Campaign, Cursor
from segments.admin import SegmentAdmin
from segments.models import SegmentMembership

from .admin_base import ReadOnlyAdmin, status_badge
from .api_keys import revoke_api_keys
from .live_config import live_config
from .models import ApiKey, ConfigVersion, Event, Push, PushAttempt, User
from .paginators import CappedPaginator
from .timeline import timeline


def _pushed_flow(campaign):
    """The running config's flow for `campaign`, if it is the one pushed (else None)."""
    try:
        definition = live_config.sync().campaign_as_pushed(campaign.name, campaign.flow_fingerprint)
    except Exception:  # a config that does not load shows no lines, never a broken page
        return None
    return definition.flow if definition is not None else None


def _campaigns_using(segment):
    """(name, page, how) of the campaigns whose audience includes or excludes `segment`."""
    used = []
    for campaign in Campaign.objects.order_by("name"):
        if segment.name in campaign.segments:
            how = "its audience"
        elif segment.name in campaign.exclude_segments:
            how = "excluded from its audience"
        else:
            continue
        how += "" if campaign.active else "; the campaign was removed"
        used.append(
            (campaign.name, reverse("admin:campaigns_campaign_change", args=[campaign.pk]), how)
        )
    return used


# The campaign and cursor pages name the line of the flow's code each step waits at; a segment's
# page names the campaigns that use it (campaigns sit above segments, so this top edge tells).
CampaignAdmin.flow_lookup = staticmethod(_pushed_flow)
SegmentAdmin.used_by = staticmethod(_campaigns_using)


@admin.register(User)
class UserAdmin(ReadOnlyAdmin):
    """segflow's users (not the admin's logins: those are Staff accounts)."""

    list_display = ("id", "email_address", "created_at", "updated_at")
    search_fields = ("^id",)  # ids that start with the words: an index answers it
    list_filter = ("evaluation_pending",)
    show_full_result_count = False
    paginator = CappedPaginator
    fields = ("id", "attributes_text", "created_at", "updated_at", "segments_now", "campaigns")
    readonly_fields = fields

    @admin.display(description="email")
    def email_address(self, obj):
        return obj.email

    @admin.display(description="attributes")
    def attributes_text(self, obj):
        return format_html(
            '<pre class="sf-code">{}</pre>', json.dumps(obj.attributes, indent=2, sort_keys=True)
        )

    @admin.display(description="in segments now")
    def segments_now(self, obj):
        rows = SegmentMembership.objects.filter(user=obj).select_related("segment")
        links = [
            format_html(
                '<a href="{}">{}</a>',
                _url("admin:segments_segment_change", m.segment_id),
                m.segment.name,
            )
            for m in rows.order_by("segment__name")
        ]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "none"

    @admin.display(description="campaigns")
    def campaigns(self, obj):
        rows = Cursor.objects.filter(user=obj).select_related("campaign").order_by("-created_at")
        items = [
            format_html(
                '<a href="{}">{}</a> {}',
                _url("admin:campaigns_cursor_change", c.pk),
                c.campaign.name,
                status_badge(c.status, c.get_status_display()),
            )
            for c in rows
        ]
        return format_html("; ".join(["{}"] * len(items)), *items) if items else "none"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        user = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if user is not None:
            page = request.GET.get("page", "0")
            context["timeline"] = timeline(user, int(page) if page.isdigit() else 0)
        return super().change_view(request, object_id, form_url, context)

    def has_delete_permission(self, request, obj=None):
        # Deleting a user removes everything about them, as the API's DELETE does.
        return request.user.is_superuser

    def get_deleted_objects(self, objs, request):
        # Their events, emails and cursors have read-only admins, but go with them all the same.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected


def _url(name: str, pk) -> str:
    return reverse(name, args=[quote(pk)])


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "user_link", "timestamp", "created_at", "processed_at")
    # Exact user ids and message ids, names that start with the words: all answered by indexes.
    search_fields = ("=user__id", "^name", "=message_id")
    search_help_text = "A user id or a message id (exactly), or the start of an event name."
    # No join with users: MariaDB would read them all to find the newest events.
    list_select_related = False

    @admin.display(description="user", ordering="user_id")
    def user_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>', _url("admin:segflow_user_change", obj.user_id), obj.user_id
        )

    show_full_result_count = False
    paginator = CappedPaginator


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ("name", "scope", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("scope",)
    exclude = ("key_hash",)
    actions = ["revoke"]

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        count = revoke_api_keys(queryset)
        self.message_user(request, f"{count} key(s) revoked.")

    def get_actions(self, request):
        # Actions need change permission by default; revoking is the one change allowed here.
        actions = super().get_actions(request)
        if request.user.is_superuser:
            actions["revoke"] = (ApiKeyAdmin.revoke, "revoke", "Revoke the selected keys")
        return actions


# Django's logins are staff accounts, apart from segflow's users.
admin.site.unregister(StaffAccount)
admin.site.unregister(Group)


@admin.register(StaffAccount)
class StaffAccountAdmin(auth_admin.UserAdmin):
    def changelist_view(self, request, extra_context=None):
        title = {"title": "Staff accounts: who may sign in to this admin"}
        return super().changelist_view(request, {**title, **(extra_context or {})})


@admin.register(Group)
class StaffGroupAdmin(auth_admin.GroupAdmin):
    def changelist_view(self, request, extra_context=None):
        title = {"title": "Staff groups"}
        return super().changelist_view(request, {**title, **(extra_context or {})})


# Celery beat's schedule: segflow keeps it (segflow/schedule.py); shown, never edited here.
class _ReadOnlyBeat:
    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


for _model, _admin in (
    (PeriodicTask, beat_admin.PeriodicTaskAdmin),
    (ClockedSchedule, beat_admin.ClockedScheduleAdmin),
    (CrontabSchedule, beat_admin.CrontabScheduleAdmin),
    (SolarSchedule, beat_admin.SolarScheduleAdmin),
    (IntervalSchedule, beat_admin.IntervalScheduleAdmin),
):
    admin.site.unregister(_model)
    admin.site.register(_model, type(_admin.__name__, (_ReadOnlyBeat, _admin), {}))


def _files_html(version: ConfigVersion | None):
    """Each file of a pushed version, its path then its text."""
    if version is None:
        return "(no files stored: pushed before versions were kept, or pruned)"
    return format_html_join(
        "",
        '<h4 style="margin: 1em 0 0.3em;">{}</h4>'
        '<pre style="white-space: pre-wrap; font-size: 12px; margin: 0;">{}</pre>',
        (
            (name + (" (the config module)" if name == version.entry else ""), text)
            for name, text in sorted(
                version.files.items(), key=lambda item: (item[0] != version.entry, item[0])
            )
        ),
    )


def _commit(git_commit: str, git_dirty: bool | None) -> str:
    if not git_commit:
        return "-"
    return git_commit[:12] + (" (with changes not committed)" if git_dirty else "")


@admin.register(Push)
class PushAdmin(ReadOnlyAdmin):
    """The history of pushes and rollbacks: each one's plan and the version it made live."""

    list_display = ("id", "created_at", "version_link", "rollback", "pushed_by", "location")
    list_select_related = ("version",)
    fields = (
        "created_at",
        "version_link",
        "rollback",
        "pushed_by",
        "location",
        "commit",
        "fingerprint",
        "plan_text",
        "source",
    )
    readonly_fields = fields

    @admin.display(description="plan")
    def plan_text(self, obj):
        return format_html('<pre style="white-space: pre-wrap;">{}</pre>', obj.plan)

    @admin.display(description="version")
    def version_link(self, obj):
        if obj.version is None:
            return "-"
        url = reverse("admin:segflow_configversion_change", args=[obj.version.pk])
        return format_html('<a href="{}">{}</a>', url, obj.version)

    @admin.display(description="commit")
    def commit(self, obj):
        return _commit(obj.version.git_commit, obj.version.git_dirty) if obj.version else "-"

    @admin.display(description="source (the version's files)")
    def source(self, obj):
        return _files_html(obj.version)


@admin.register(ConfigVersion)
class ConfigVersionAdmin(ReadOnlyAdmin):
    """The stored versions of the config (SEGFLOW_CONFIG_VERSIONS_KEPT of them), with their
    files: what `segflow_push --rollback --to N` applies again."""

    list_display = ("number", "created_at", "pushed_by", "commit", "location", "size", "live")
    fields = (
        "number",
        "created_at",
        "pushed_by",
        "location",
        "commit",
        "fingerprint",
        "config_fingerprint",
        "size",
        "live",
        "source",
    )
    readonly_fields = fields

    @admin.display(description="commit")
    def commit(self, obj):
        return _commit(obj.git_commit, obj.git_dirty)

    @admin.display(boolean=True, description="live")
    def live(self, obj):
        latest = Push.objects.order_by("-id").values_list("version_id", flat=True).first()
        return latest == obj.pk

    @admin.display(description="source")
    def source(self, obj):
        return _files_html(obj)


@admin.register(PushAttempt)
class PushAttemptAdmin(ReadOnlyAdmin):
    """The audit: every push and rollback tried, from here or over HTTP, and what came of it."""

    list_display = (
        "created_at",
        "action",
        "dry_run",
        "result",
        "actor",
        "via",
        "client_ip",
        "commit",
        "version_number",
    )
    list_filter = ("result", "action", "via", "dry_run")
    search_fields = ("actor", "client_ip", "git_commit", "location")
    exclude = ("message",)
    readonly_fields = ("message_text",)

    @admin.display(description="commit")
    def commit(self, obj):
        return _commit(obj.git_commit, obj.git_dirty)

    @admin.display(description="message")
    def message_text(self, obj):
        return format_html('<pre style="white-space: pre-wrap;">{}</pre>', obj.message)
