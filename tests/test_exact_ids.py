"""Ids and names are compared exactly on every database: no trailing-space padding.

On MariaDB and MySQL, `utf8mb4_bin` is a PAD SPACE collation: `PUT /api/users/t0_1%20` replaced the
user `t0_1`, and `DELETE /api/users/t0_2%20%20` deleted `t0_2`. These tests run on every database
(SQLite never padded); the ones marked mysql_only read the schema itself.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from campaigns.models import Cursor
from delivery.models import OutboxEmail, Unsubscription
from segflow.fields import exact_collation
from segflow.models import Event, User
from segments.models import SegmentMembership

pytestmark = pytest.mark.django_db(transaction=True)

# Every column of an ExactCharField, and every foreign key column to users.id.
EXACT_COLUMNS = {
    "users": ["id"],
    "events": ["name", "user_id"],
    "segments": ["name"],
    "segment_memberships": ["user_id"],
    "segment_membership_changes": ["user_id"],
    "campaigns": ["name"],
    "campaign_cursors": ["entry_key", "user_id"],
    "email_templates": ["name"],
    "transactions": ["event", "name"],
    "outbox": ["user_id"],
    "email_unsubscriptions": ["user_id"],
}


def test_ids_that_differ_by_trailing_spaces_are_different_users(api):
    for user_id in ("t0_1", "t0_2"):
        assert api.put(f"/api/users/{user_id}", {"attributes": {"n": user_id}}, format="json")

    response = api.put("/api/users/t0_1%20", {"attributes": {"n": "other"}}, format="json")
    assert response.status_code == 201  # a new user, not t0_1 replaced
    assert response.json()["id"] == "t0_1 "
    assert api.get("/api/users/t0_1").json()["attributes"] == {"n": "t0_1"}
    assert api.get("/api/users/t0_1%20").json()["attributes"] == {"n": "other"}

    assert api.delete("/api/users/t0_2%20%20").status_code == 404  # no such user
    assert api.get("/api/users/t0_2").status_code == 200
    patched = api.patch("/api/users/t0_2%20", {"attributes": {"n": "x"}}, format="json")
    assert patched.status_code == 404
    assert api.get("/api/users/t0_2").json()["attributes"] == {"n": "t0_2"}

    assert sorted(User.objects.values_list("id", flat=True)) == ["t0_1", "t0_1 ", "t0_2"]
    assert not User.objects.filter(pk="t0_2 ").exists()


def test_events_of_a_user_and_event_names_are_matched_exactly(api):
    api.post("/api/users/t0_1/events", {"name": "login"}, format="json")
    api.post("/api/users/t0_1%20/events", {"name": "login "}, format="json")

    assert api.get("/api/users/t0_1/events").json()["count"] == 1
    assert Event.objects.filter(name="login").count() == 1
    assert Event.objects.filter(user_id="t0_1").count() == 1
    with connection.cursor() as cursor:  # as segment SQL reads them
        cursor.execute(
            "SELECT u.id FROM users u JOIN events e ON e.user_id = u.id WHERE e.name = 'login'"
        )
        assert list(cursor.fetchall()) == [("t0_1",)]


def full_columns(table: str) -> dict[str, str | None]:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW FULL COLUMNS FROM {connection.ops.quote_name(table)}")
        return {row[0]: row[2] for row in cursor.fetchall()}


def collations() -> dict[str, str | None]:
    return {
        f"{table}.{column}": full_columns(table)[column]
        for table, columns in EXACT_COLUMNS.items()
        for column in columns
    }


def foreign_keys_to_users() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME = 'users' "
            "ORDER BY TABLE_NAME, COLUMN_NAME"
        )
        return list(cursor.fetchall())


needs_mysql = pytest.mark.skipif(
    connection.vendor != "mysql", reason="reads MySQL's and MariaDB's column collations"
)


@pytest.mark.mysql_only
@needs_mysql
def test_every_exact_column_and_every_foreign_key_to_users_has_a_no_pad_collation():
    expected = "utf8mb4_nopad_bin" if connection.mysql_is_mariadb else "utf8mb4_0900_bin"
    assert exact_collation(connection) == expected
    assert collations() == {name: expected for name in collations()}
    # ... and no foreign key to users.id was left out of the list above.
    assert {(t, c) for t, c in foreign_keys_to_users()} <= {
        (t, c) for t, columns in EXACT_COLUMNS.items() for c in columns
    }


@pytest.mark.mysql_only
@needs_mysql
def test_the_migration_moves_a_padded_database_to_exact_ids_and_keeps_every_row():
    executor = MigrationExecutor(connection)
    before_fix = [("segflow", "0006_outbox_moves_to_delivery")]
    try:
        executor.migrate(before_fix)  # back to utf8mb4_bin, as databases made before were
        assert set(collations().values()) == {"utf8mb4_bin"}
        fks = foreign_keys_to_users()
        assert len(fks) >= 5

        # The models as they were then: later migrations add columns the old tables lack.
        old = executor.loader.project_state(before_fix).apps
        user = old.get_model("segflow", "User").objects.create(
            id="t0_1", attributes={"email": "t@example.com"}
        )
        old.get_model("segflow", "Event").objects.create(user=user, name="login")
        old.get_model("delivery", "OutboxEmail").objects.create(
            key="k", user=user, to_address="t@example.com"
        )
        old.get_model("delivery", "Unsubscription").objects.create(user=user, method="link")
        # the padding this migration removes
        assert old.get_model("segflow", "User").objects.filter(pk="t0_1 ").exists()

        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert set(collations().values()) == {exact_collation(connection)}
    assert foreign_keys_to_users() == fks  # added back, every one
    assert not User.objects.filter(pk="t0_1 ").exists()
    assert Event.objects.get(user_id="t0_1").name == "login"
    assert OutboxEmail.objects.get().user_id == "t0_1"
    assert Unsubscription.objects.get().user_id == "t0_1"
    assert (Cursor.objects.count(), SegmentMembership.objects.count()) == (0, 0)
    # The foreign keys hold again: an event of a user who does not exist is refused.
    User.objects.create(id="t0_1 ")
    with pytest.raises(Exception, match="foreign key constraint"):
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO events (user_id, name, attributes, created_at, timestamp, context) "
                "VALUES ('nobody', 'x', '{}', NOW(), NOW(), '{}')"
            )
