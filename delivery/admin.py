from django.contrib import admin

from segflow.admin_base import ReadOnlyAdmin

from .models import Suppression, Unsubscription
from .policy import normalize_address


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Suppressed addresses. Add one by hand to stop all email to it; delete one to lift it."""

    list_display = ("address", "reason", "provider", "created_at", "detail")
    list_filter = ("reason", "provider")
    search_fields = ("address",)
    date_hierarchy = "created_at"
    fields = ("address", "reason", "detail", "provider", "outbox_email", "created_at")
    raw_id_fields = ("outbox_email",)

    def get_readonly_fields(self, request, obj=None):
        # What the provider reported stays as it was; a new row is typed in by hand.
        if obj is None:
            return ("provider", "outbox_email", "created_at")
        return self.fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        obj.address = normalize_address(obj.address)
        super().save_model(request, obj, form, change)


@admin.register(Unsubscription)
class UnsubscriptionAdmin(ReadOnlyAdmin):
    """Users who unsubscribed from campaigns. Deleting a row subscribes the user again."""

    list_display = ("user", "method", "created_at", "outbox_email")
    list_filter = ("method",)
    search_fields = ("user__id",)
    date_hierarchy = "created_at"

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser
