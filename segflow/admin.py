from django.contrib import admin
from django.utils.html import format_html

from campaigns.models import Cursor
from delivery.models import OutboxEmail
from segments.models import SegmentMembership

from .admin_base import ReadOnlyAdmin
from .models import ApiKey, Event, Push, User

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
    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
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


@admin.register(Push)
class PushAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "fingerprint")

    @admin.display(description="plan")
    def plan_text(self, obj):
        return format_html('<pre style="white-space: pre-wrap;">{}</pre>', obj.plan)

    readonly_fields = ("plan_text",)
    exclude = ("plan",)
