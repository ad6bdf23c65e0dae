from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("segflow.api.urls")),
    # Unsubscribe links and the providers' tracking webhooks.
    path("", include("delivery.urls")),
]
