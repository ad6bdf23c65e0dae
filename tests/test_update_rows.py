"""segflow.db.update_rows: the batch write of locked rows that cursors go through (one statement
on MySQL and MariaDB) changes the named fields of exactly those rows, and nothing else."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from segflow.db import update_rows
from segflow.models import Event, User

pytestmark = pytest.mark.django_db(transaction=True)


def _events(count: int) -> list[Event]:
    User.objects.create(id="ann", attributes={})
    Event.objects.bulk_create(
        Event(user_id="ann", name=f"e{n}", attributes={"n": n}, message_id=f"m{n}")
        for n in range(count)
    )
    return list(Event.objects.order_by("pk"))


def test_the_named_fields_of_the_given_rows_change_and_nothing_else():
    rows = _events(6)
    now = timezone.now()
    changed = rows[1:5]
    for row in changed:
        row.name = f"renamed-{row.name}"
        row.processed_at = now
        row.attributes = {"not": "written"}  # not named: stays as stored
    with transaction.atomic():
        update_rows(changed, ["name", "processed_at"])

    stored = {e.pk: e for e in Event.objects.all()}
    assert len(stored) == 6  # updated in place: no row added
    for n, row in enumerate(rows):
        again = stored[row.pk]
        assert again.attributes == {"n": n}
        if row in changed:
            assert (again.name, again.processed_at) == (f"renamed-e{n}", now)
        else:
            assert (again.name, again.processed_at) == (f"e{n}", None)


def test_a_value_another_row_holds_under_a_unique_key_fails_and_changes_nothing():
    # The one-statement write meets each row's own primary key first: a unique value that
    # belongs to another row is an error, as for an UPDATE, never a write to that other row.
    rows = _events(3)
    rows[0].message_id = rows[2].message_id
    rows[0].name = "taken"
    with pytest.raises(IntegrityError), transaction.atomic():
        update_rows(rows[:2], ["name", "message_id"])
    assert [(e.name, e.message_id) for e in Event.objects.order_by("pk")] == [
        ("e0", "m0"),
        ("e1", "m1"),
        ("e2", "m2"),
    ]
