"""Rows made straight in the database, for tests that need data the API is not under test for."""

import factory
from django.utils import timezone

from segflow.models import Event, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("id",)

    id = factory.Sequence(lambda n: f"user-{n}")
    attributes = factory.LazyAttribute(
        lambda u: {"email": f"{u.id}@example.com", "name": u.id.title()}
    )
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyAttribute(lambda u: u.created_at)
    # Rows made here are as a finished evaluation leaves them; the API's writes set it again.
    evaluation_pending = False


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    user = factory.SubFactory(UserFactory)
    name = "page_view"
    attributes = factory.LazyFunction(dict)
    created_at = factory.LazyFunction(timezone.now)
