from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

urlpatterns = [
    # The outbox's admin pages moved with the outbox to the email app; old bookmarks still work.
    re_path(
        r"^admin/segflow/outboxemail/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/delivery/outboxemail/%(rest)s", query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("api/", include("segflow.api.urls")),
    # Unsubscribe links and the providers' tracking webhooks.
    path("", include("delivery.urls")),
]
