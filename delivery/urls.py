from django.urls import path

from . import views

app_name = "delivery"
urlpatterns = [
    path("unsubscribe/<str:token>/", views.unsubscribe_view, name="unsubscribe"),
    path("webhooks/postmark/tracking/", views.postmark_tracking, name="postmark_tracking"),
    path("webhooks/amazon_ses/tracking/", views.amazon_ses_tracking, name="amazon_ses_tracking"),
]
