from django.contrib import admin

from segflow.admin_base import CodeDefinedAdmin, ReadOnlyAdmin

from .models import Campaign, Cursor, CursorStep


@admin.register(Campaign)
class CampaignAdmin(CodeDefinedAdmin):
    list_display = (
        "name",
        "behavior",
        "active",
        "segments",
        "exclude_segments",
        "active_cursors",
        "updated_at",
    )
    list_filter = ("active", "behavior")
    exclude = ("source",)
    readonly_fields = ("source_code",)

    @admin.display(description="users in the flow")
    def active_cursors(self, obj):
        return obj.cursors.filter(status=Cursor.Status.ACTIVE).count()


class CursorStepInline(admin.TabularInline):
    model = CursorStep
    fields = ("index", "kind", "args", "result", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Cursor)
class CursorAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "campaign",
        "user",
        "status",
        "step_count",
        "due_at",
        "created_at",
        "ended_at",
    )
    list_filter = ("status", "campaign")
    search_fields = ("user__id",)
    list_select_related = ("campaign",)
    inlines = [CursorStepInline]
