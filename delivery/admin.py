from django import forms
from django.contrib import admin
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from segflow import tallies
from segflow.addresses import NotOneAddress, parse_address
from segflow.admin_base import ADMIN_CSS, ReadOnlyAdmin, status_badge
from segflow.paginators import CappedPaginator
from segflow.versions import describe as describe_version

from .models import OutboxEmail, Suppression, Unsubscription
from .providers import PROVIDERS
from .sending import send_again
from .tallies import TEST_KEY_PREFIX, is_test
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


class _CountedChoices(admin.SimpleListFilter):
    """Choices read from the counts of emails (a few rows), not from the outbox itself (a
    SELECT DISTINCT over every row)."""

    def _keys(self):
        return [k for k in tallies.read(tallies.Want("emails")) if k.kind == "emails"]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value is not None else queryset


class CampaignFilter(_CountedChoices):
    title = "campaign"
    parameter_name = "campaign_name"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted({k.owner for k in self._keys() if k.owner})]


class TemplateFilter(_CountedChoices):
    title = "template or transaction"
    parameter_name = "template_name"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted({k.a for k in self._keys() if k.a})]


class ProviderFilter(admin.SimpleListFilter):
    """The providers segflow knows (not a SELECT DISTINCT over every row)."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(PROVIDERS)]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(provider=value) if value is not None else queryset


class TestSendFilter(admin.SimpleListFilter):
    title = "test sends"
    parameter_name = "test"

    def lookups(self, request, model_admin):
        return [("yes", "test sends only"), ("no", "no test sends")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(key__startswith=TEST_KEY_PREFIX)
        if self.value() == "no":
            return queryset.exclude(key__startswith=TEST_KEY_PREFIX)
        return queryset


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Suppressed addresses. Add one by hand to stop all email to it; delete one to lift it."""

    form = SuppressionForm

    list_display = ("address", "reason", "provider", "created_at", "detail")

    class Media:
        css = {"all": [ADMIN_CSS]}

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

    def lookup_allowed(self, lookup, value, request=None):
        # The campaign page links its "unsubscribed" counts here, by the email's campaign and
        # template.
        if lookup in ("outbox_email__campaign_name", "outbox_email__template_name"):
            return True
        return super().lookup_allowed(lookup, value, request)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(OutboxEmail)
class OutboxEmailAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "to_address",
        "subject_line",
        "status_label",
        "origin",
        "when",
    )
    list_filter = ("status", CampaignFilter, TemplateFilter, TestSendFilter, ProviderFilter)
    search_fields = ("to_address", "user__id", "subject", "key", "message_id")
    show_full_result_count = False
    paginator = CappedPaginator
    fieldsets = (
        (None, {"fields": ("key", "user", "status_label", "reason", "origin", "version")}),
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

    @admin.display(description="when", ordering="created_at")
    def when(self, obj):
        # One column for both moments, so that the list fits a laptop's screen.
        if obj.sent_at:
            return format_html("sent {}", date_format(localtime(obj.sent_at), "DATETIME_FORMAT"))
        return format_html("written {}", date_format(localtime(obj.created_at), "DATETIME_FORMAT"))

    @admin.display(description="subject", ordering="subject")
    def subject_line(self, obj):
        if obj.subject:
            return obj.subject
        return format_html('<span class="sf-muted">(none: {})</span>', _unrendered(obj))

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        label = status_badge(obj.status, obj.get_status_display())
        if is_test(obj.key):
            return format_html("{} {}", label, status_badge("test", "test send"))
        return label

    @admin.display(description="caused by")
    def origin(self, obj):
        if is_test(obj.key):
            _, template, who, _ = (obj.key.split(":", 3) + ["", "", ""])[:4]
            return f"test send of {template} by {who}, rendered for {obj.user_id}"
        if obj.campaign_name:
            return f"campaign {obj.campaign_name}, step {obj.step_index + 1}"
        if obj.transaction_name:
            return f"transaction {obj.transaction_name}, event {obj.event_id}"
        return obj.key

    @admin.display(description="written by")
    def version(self, obj):
        return describe_version(obj.config_version)

    @admin.display(description="rendered email")
    def rendered_html(self, obj):
        # The email's own HTML, in a sandbox: no scripts, no forms, no navigation.
        if not obj.html:
            return format_html('<span class="sf-muted">(none: {})</span>', _unrendered(obj))
        return format_html('<iframe sandbox="" srcdoc="{}" class="sf-email"></iframe>', obj.html)

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


def _unrendered(row: OutboxEmail) -> str:
    """Why a row has no subject or body: it was never rendered."""
    if row.status == OutboxEmail.Status.SKIPPED:
        return "skipped before it was rendered"
    if row.status == OutboxEmail.Status.FAILED and not row.attempts:
        return "the template failed to render"
    return "not rendered"
