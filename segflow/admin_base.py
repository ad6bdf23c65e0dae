"""Admin pieces shared by the apps: code-defined objects are shown, never edited, in the admin."""

from django.contrib import admin
from django.utils.html import format_html


class ReadOnlyAdmin(admin.ModelAdmin):
    """For rows that only code (a push, the workers) writes: browse them, change nothing."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CodeDefinedAdmin(ReadOnlyAdmin):
    """Segments, campaigns, templates and transactions: defined in the config, shown with source."""

    @admin.display(description="source code")
    def source_code(self, obj):
        return format_html(
            '<pre style="white-space: pre-wrap; font-size: 12px; margin: 0;">{}</pre>', obj.source
        )
