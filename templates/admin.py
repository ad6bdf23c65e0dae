from django.contrib import admin

from segflow.admin_base import CodeDefinedAdmin

from .models import EmailTemplate


@admin.register(EmailTemplate)
class EmailTemplateAdmin(CodeDefinedAdmin):
    list_display = ("name", "updated_at")
    search_fields = ("name",)
    exclude = ("source",)
    readonly_fields = ("source_code",)
    # The page also offers a test send (segflow/admin_site.py serves it).
    change_form_template = "admin/email_templates/emailtemplate/change_form.html"
