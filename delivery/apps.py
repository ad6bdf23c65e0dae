from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "delivery"
    verbose_name = "Delivery: unsubscribes, suppressions and tracking"

    def ready(self) -> None:
        from anymail.signals import tracking

        from .tracking import on_tracking_event

        tracking.connect(on_tracking_event, dispatch_uid="segflow-delivery-tracking")
