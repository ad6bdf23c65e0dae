from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "delivery"
    verbose_name = "Email: outbox, unsubscribes, suppressions and tracking"

    def ready(self) -> None:
        from anymail.signals import tracking

        from . import (
            providers,  # noqa: F401 - each provider tells the config its settings
            tallies,
        )
        from .tracking import on_tracking_event

        tracking.connect(on_tracking_event, dispatch_uid="segflow-delivery-tracking")
        tallies.connect()
