"""segflow.db.insert_rows: the written-out multi-row insert that outbox rows and step records go
through stores exactly what the ORM's bulk_create would, and gives each row its own id."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from segflow.db import insert_rows
from segflow.models import Event, User

pytestmark = pytest.mark.django_db(transaction=True)


def test_rows_are_stored_as_given_each_with_its_own_id():
    User.objects.create(id="ann", attributes={})
    User.objects.create(id="bob", attributes={})
    now = timezone.now()
    shared = {"plan": "pro"}  # the same object in many rows: prepared once, stored in each
    rows = [
        Event(
            user_id="ann" if n % 3 else "bob",
            name=f"event-{n % 7}",
            attributes=shared if n % 2 else {"n": n, "nested": [n, None, "é"]},
            message_id=None if n % 5 else f"msg-{n}",
            timestamp=now - timedelta(seconds=n % 4),
            created_at=now,
            context={},
        )
        for n in range(700)  # more than one statement holds on SQLite
    ]
    insert_rows(rows)

    stored = {event.pk: event for event in Event.objects.all()}
    assert len(stored) == 700
    if connection.features.can_return_rows_from_bulk_insert:
        assert [row.pk for row in rows] == sorted(stored)  # in order, each its own
        for row in rows:
            again = stored[row.pk]
            assert not row._state.adding
            assert (again.user_id, again.name, again.attributes, again.message_id) == (
                row.user_id,
                row.name,
                row.attributes,
                row.message_id,
            )
            assert again.timestamp == row.timestamp and again.created_at == now
            assert again.context == {}
    else:  # (MySQL returns no ids: the rows are there all the same)
        assert sorted(e.message_id for e in stored.values() if e.message_id) == sorted(
            row.message_id for row in rows if row.message_id
        )


def test_rows_with_ids_of_their_own_keep_them():
    User.objects.create(id="ann", attributes={})
    now = timezone.now()
    rows = [
        Event(pk=1000 + n, user_id="ann", name="x", timestamp=now, created_at=now) for n in range(3)
    ]
    insert_rows(rows)
    assert sorted(Event.objects.values_list("pk", flat=True)) == [1000, 1001, 1002]
    insert_rows([])  # nothing to do
    assert Event.objects.count() == 3
