from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from segflow.api.urls import v1_urlpatterns

urlpatterns = [
    # The outbox's admin pages moved with the outbox to the email app; old bookmarks still work.
    re_path(
        r"^admin/segflow/outboxemail/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/delivery/outboxemail/%(rest)s", query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("api/", include("segflow.api.urls")),
    # The Segment tracking spec, where Segment's libraries send: identify, track, batch...
    path("v1/", include(v1_urlpatterns)),
    # Unsubscribe links and the providers' tracking webhooks.
    path("", include("delivery.urls")),
]
