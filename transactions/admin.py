from django.contrib import admin

from segflow.admin_base import CodeDefinedAdmin

from .models import Transaction


@admin.register(Transaction)
class TransactionAdmin(CodeDefinedAdmin):
    list_display = ("name", "event", "updated_at")
    exclude = ("source",)
    readonly_fields = ("source_code",)
