from django.urls import path, re_path

from . import views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("ready", views.ReadyView.as_view(), name="ready"),
    path("users/<str:user_id>", views.UserView.as_view(), name="user"),
    path("users/<str:user_id>/events", views.UserEventsView.as_view(), name="user-events"),
    path("events", views.EventsView.as_view(), name="events"),
    re_path(r"^users/?$", views.EmptyIdView.as_view()),
    re_path(r"^users//events/?$", views.EmptyIdView.as_view()),
    # Anything else under /api/ answers in JSON too, never with an HTML page.
    re_path(r"^.*$", views.no_such_endpoint),
]
