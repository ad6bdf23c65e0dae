from django.apps import AppConfig


class SegflowConfig(AppConfig):
    name = "segflow"
    verbose_name = "Segflow: users, events and pushes"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import db, tasks  # noqa: F401 - SQLite's MySQL functions, `__among`; the named tasks
        from .schedule import ensure_periodic_tasks
        from .upkeep import ensure_tallies

        post_migrate.connect(ensure_periodic_tasks, sender=self)
        post_migrate.connect(ensure_tallies, sender=self)
