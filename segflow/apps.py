from django.apps import AppConfig


class SegflowConfig(AppConfig):
    name = "segflow"
    verbose_name = "Segflow: users, events and email"

    def ready(self) -> None:
        from . import signals  # noqa: F401
