from django.urls import path, re_path
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import push, segment, views

urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    path("health", views.HealthView.as_view(), name="health"),
    path("ready", views.ReadyView.as_view(), name="ready"),
    path("users/<str:user_id>", views.UserView.as_view(), name="user"),
    path("users/<str:user_id>/events", views.UserEventsView.as_view(), name="user-events"),
    path("events", views.EventsView.as_view(), name="events"),
    # Configs pushed from CI (a key of the scope `push`; off unless SEGFLOW_ALLOW_REMOTE_PUSH).
    path("push", push.PushView.as_view(), name="push"),
    path("push/rollback", push.RollbackView.as_view(), name="push-rollback"),
    # The OpenAPI schema (JSON; YAML with ?format=yaml) and Swagger UI on it. No key needed.
    path(
        "schema/",
        SpectacularAPIView.as_view(
            renderer_classes=[
                OpenApiJsonRenderer2,
                OpenApiJsonRenderer,
                OpenApiYamlRenderer,
                OpenApiYamlRenderer2,
            ]
        ),
        name="schema",
    ),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^users/?$", views.EmptyIdView.as_view()),
    re_path(r"^users//events/?$", views.EmptyIdView.as_view()),
    # Anything else under /api/ answers in JSON too, never with an HTML page.
    re_path(r"^.*$", views.no_such_endpoint),
]

# /v1/: the Segment tracking spec (segflow/api/segment.py).
v1_urlpatterns = [
    path("identify", segment.IdentifyView.as_view(), name="v1-identify"),
    path("track", segment.TrackView.as_view(), name="v1-track"),
    path("page", segment.PageView.as_view(), name="v1-page"),
    path("screen", segment.ScreenView.as_view(), name="v1-screen"),
    path("group", segment.GroupView.as_view(), name="v1-group"),
    path("alias", segment.AliasView.as_view(), name="v1-alias"),
    path("batch", segment.BatchView.as_view(), name="v1-batch"),
    re_path(r"^.*$", segment.no_such_endpoint),
]
