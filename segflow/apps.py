from django.apps import AppConfig


class SegflowConfig(AppConfig):
    name = "segflow"
    verbose_name = "Segflow: users, events and email"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import signals  # noqa: F401
        from .schedule import ensure_periodic_tasks

        post_migrate.connect(ensure_periodic_tasks, sender=self)
