from django.contrib import admin

from segflow.admin_base import CodeDefinedAdmin, ReadOnlyAdmin

from .models import Segment, SegmentMembership


@admin.register(Segment)
class SegmentAdmin(CodeDefinedAdmin):
    list_display = (
        "name",
        "kind",
        "member_count",
        "reads_users",
        "reads_events",
        "refresh_seconds",
        "refreshed_at",
        "updated_at",
    )
    exclude = ("source",)
    readonly_fields = ("source_code",)

    @admin.display(description="members")
    def member_count(self, obj):
        return obj.memberships.count()


@admin.register(SegmentMembership)
class SegmentMembershipAdmin(ReadOnlyAdmin):
    list_display = ("segment", "user", "created_at")
    list_filter = ("segment",)
    search_fields = ("user__id",)
    list_select_related = ("segment",)
