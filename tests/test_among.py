"""`field__among=values`, the kernel's IN for ids without preparing each value: it selects what
`__in` selects, on ids, on a foreign key's raw ids, negated, and for no values at all."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segflow.models import Event, User

pytestmark = pytest.mark.django_db

USERS = ["ann", "bob", "cé", "dan", "Eve"]


@pytest.fixture
def stored():
    for user_id in USERS:
        User.objects.create(id=user_id, attributes={})
    events = [Event.objects.create(user_id=USERS[n % 5], name="login") for n in range(12)]
    return [event.pk for event in events]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 14)), users=st.lists(st.sampled_from(USERS + ["zed"])))
def test_among_selects_what_in_selects(stored, picks, users):
    ids = [stored[n] if n < len(stored) else 10**9 + n for n in picks]

    def chosen(lookup: str, **more) -> list[int]:
        rows = Event.objects.filter(**{f"pk__{lookup}": ids}, **more)
        return sorted(rows.values_list("pk", flat=True))

    assert chosen("among") == chosen("in")
    assert sorted(
        Event.objects.filter(user_id__among=users).values_list("pk", flat=True)
    ) == sorted(Event.objects.filter(user_id__in=users).values_list("pk", flat=True))
    assert sorted(Event.objects.exclude(pk__among=ids).values_list("pk", flat=True)) == sorted(
        Event.objects.exclude(pk__in=ids).values_list("pk", flat=True)
    )


def test_among_nothing_selects_nothing_and_updates_nothing(stored):
    assert list(Event.objects.filter(pk__among=[])) == []
    assert Event.objects.filter(user_id__among=set()).update(name="x") == 0
    assert Event.objects.exclude(pk__among=[]).count() == len(stored)
