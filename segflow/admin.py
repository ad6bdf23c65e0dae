from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from campaigns.models import Cursor
from delivery.models import OutboxEmail
from segments.models import SegmentMembership

from .admin_base import ReadOnlyAdmin
from .models import ApiKey, ConfigVersion, Event, Push, PushAttempt, User

admin.site.site_header = "segflow"
admin.site.site_title = "segflow admin"
admin.site.index_title = "Users, segments, campaigns and email"
admin.site.site_url = None  # segflow has no public site to link to


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class MembershipInline(ReadOnlyInline):
    model = SegmentMembership
    fields = ("segment", "created_at")
    readonly_fields = fields
    verbose_name_plural = "segments"


class CursorInline(ReadOnlyInline):
    model = Cursor
    fields = ("campaign", "status", "step_count", "due_at", "created_at", "end_reason")
    readonly_fields = fields
    verbose_name_plural = "campaigns"


class OutboxInline(ReadOnlyInline):
    model = OutboxEmail
    fields = ("template_name", "subject", "status", "reason", "created_at", "sent_at")
    readonly_fields = fields
    ordering = ("-id",)
    verbose_name_plural = "emails"


class EventInline(ReadOnlyInline):
    model = Event
    fields = ("name", "attributes", "timestamp", "created_at")
    readonly_fields = fields
    ordering = ("-created_at",)
    max_num = 0

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-created_at")


@admin.register(User)
class UserAdmin(ReadOnlyAdmin):
    list_display = ("id", "email_address", "created_at", "updated_at")
    search_fields = ("id",)
    date_hierarchy = "created_at"
    fields = ("id", "attributes", "created_at", "updated_at")
    inlines = [MembershipInline, CursorInline, OutboxInline, EventInline]

    @admin.display(description="email")
    def email_address(self, obj):
        return obj.email

    def has_delete_permission(self, request, obj=None):
        # Deleting a user removes everything about them, as the API's DELETE does.
        return request.user.is_superuser

    def get_deleted_objects(self, objs, request):
        # Their events, emails and cursors have read-only admins, but go with them all the same.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "user", "timestamp", "created_at", "processed_at")
    list_filter = ("name",)
    search_fields = ("user__id", "name", "=message_id")
    date_hierarchy = "created_at"
    list_select_related = ("user",)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ("name", "scope", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("scope",)
    exclude = ("key_hash",)
    actions = ["revoke"]

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        from django.utils import timezone

        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} key(s) revoked.")

    def get_actions(self, request):
        # Actions need change permission by default; revoking is the one change allowed here.
        actions = super().get_actions(request)
        if request.user.is_superuser:
            actions["revoke"] = (ApiKeyAdmin.revoke, "revoke", "Revoke the selected keys")
        return actions


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
