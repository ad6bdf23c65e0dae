from django.contrib import admin

from segflow.admin_base import CodeDefinedAdmin

from .models import EmailTemplate


@admin.register(EmailTemplate)
class EmailTemplateAdmin(CodeDefinedAdmin):
    list_display = ("name", "updated_at")
    exclude = ("source",)
    readonly_fields = ("source_code",)
