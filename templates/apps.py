from django.apps import AppConfig


class TemplatesConfig(AppConfig):
    name = "templates"
    label = "email_templates"
    verbose_name = "Email templates"
