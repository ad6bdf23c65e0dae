from django import forms
from django.contrib import admin
from django.utils.html import format_html

from segflow.addresses import NotOneAddress, parse_address
from segflow.admin_base import ReadOnlyAdmin

from .models import OutboxEmail, Suppression, Unsubscription
from .sending import send_again
from .unsubscribe import list_unsubscribe_headers


class SuppressionForm(forms.ModelForm):
    class Meta:
        model = Suppression
        fields = ("address", "reason", "detail", "provider", "outbox_email")

    def clean_address(self) -> str:
        """One bare address, stored normalised, as the outbox compares it."""
        try:
            return parse_address(self.cleaned_data.get("address"))
        except NotOneAddress as exc:
            raise forms.ValidationError(f"Not one email address: {exc}") from None


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Suppressed addresses. Add one by hand to stop all email to it; delete one to lift it."""

    form = SuppressionForm

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


@admin.register(Unsubscription)
class UnsubscriptionAdmin(ReadOnlyAdmin):
    """Users who unsubscribed from campaigns. Deleting a row subscribes the user again."""

    list_display = ("user", "method", "created_at", "outbox_email")
    list_filter = ("method",)
    search_fields = ("user__id",)
    date_hierarchy = "created_at"

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(OutboxEmail)
class OutboxEmailAdmin(ReadOnlyAdmin):
    list_display = ("id", "to_address", "subject", "status", "origin", "created_at", "sent_at")
    list_filter = ("status", "provider", "campaign_name", "transaction_name", "template_name")
    search_fields = ("to_address", "user__id", "subject", "key", "message_id")
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("key", "user", "status", "reason", "origin")}),
        (
            "Message",
            {"fields": ("from_address", "to_address", "subject", "headers", "rendered_html")},
        ),
        ("Text part", {"fields": ("text_part",), "classes": ("collapse",)}),
        (
            "Delivery",
            {
                "fields": (
                    "provider",
                    "message_id",
                    "attempts",
                    "next_attempt_at",
                    "created_at",
                    "sent_at",
                    "delivered_at",
                    "bounced_at",
                    "complained_at",
                    "opened_at",
                    "clicked_at",
                    "feedback",
                )
            },
        ),
    )
    # Everything shown is read-only: the fields are the fieldsets' own.
    readonly_fields = tuple(name for _, section in fieldsets for name in section["fields"])
    actions = ["send_again"]

    @admin.display(description="caused by")
    def origin(self, obj):
        if obj.campaign_name:
            return f"campaign {obj.campaign_name}, step {obj.step_index + 1}"
        if obj.transaction_name:
            return f"transaction {obj.transaction_name}, event {obj.event_id}"
        return obj.key

    @admin.display(description="rendered email")
    def rendered_html(self, obj):
        # The email's own HTML, in a sandbox: no scripts, no forms, no navigation.
        return format_html(
            '<iframe sandbox="" srcdoc="{}" style="width: 100%; height: 480px; '
            'border: 1px solid #ccc;"></iframe>',
            obj.html,
        )

    @admin.display(description="text part")
    def text_part(self, obj):
        return format_html('<pre style="white-space: pre-wrap;">{}</pre>', obj.text)

    @admin.display(description="extra headers")
    def headers(self, obj):
        if not obj.unsubscribe_url:
            return "-"
        lines = "\n".join(
            f"{k}: {v}" for k, v in list_unsubscribe_headers(obj.unsubscribe_url).items()
        )
        return format_html('<pre style="white-space: pre-wrap;">{}</pre>', lines)

    @admin.action(description="Send the selected failed or unknown emails again")
    def send_again(self, request, queryset):
        count = send_again(list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request,
            f"{count} email(s) queued again; emails that were not failed or unknown were left.",
        )

    def get_actions(self, request):
        # Sending again is the one change allowed here, and only to superusers.
        actions = super().get_actions(request)
        if request.user.is_superuser:
            actions["send_again"] = (
                OutboxEmailAdmin.send_again,
                "send_again",
                "Send the selected failed or unknown emails again",
            )
        return actions
