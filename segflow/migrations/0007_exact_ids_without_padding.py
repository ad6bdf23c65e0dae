"""Ids and names are compared exactly on MySQL and MariaDB: a binary NO PAD collation.

Until now their columns were `utf8mb4_bin`, which pads trailing spaces: `PUT /api/users/jane%20`
replaced the user `jane`, and `DELETE /api/users/jane%20%20` deleted her. Every column of an
ExactCharField, and every foreign key column that points to `users.id` (whatever table it is in),
moves to `utf8mb4_nopad_bin` (MariaDB) or `utf8mb4_0900_bin` (MySQL 8). Going from PAD to NO PAD
only makes values more distinct, so no unique key can clash and every row is kept.

Django cannot see this change (the collation is chosen by the server, not written in the model
state), so it is done here in SQL, and only on MySQL and MariaDB: the foreign keys to `users.id`
are dropped, the columns altered, and the foreign keys added again as they were. A column that
already has the collation is left alone (a database created since ExactCharField chose it).
Each ALTER rebuilds its table: on a large `events` table this takes a while.
"""

from django.db import migrations

from segflow.fields import exact_collation

PAD_COLLATION = "utf8mb4_bin"

# Every ExactCharField's column (foreign keys to users.id are found in the schema).
COLUMNS = [
    ("users", "id"),
    ("events", "name"),
    ("segments", "name"),
    ("campaigns", "name"),
    ("campaign_cursors", "entry_key"),
    ("email_templates", "name"),
    ("transactions", "name"),
    ("transactions", "event"),
]


def _foreign_keys_to_users(cursor) -> list[tuple[str, str, str, str, str]]:
    """(table, column, constraint, on update, on delete) of each foreign key to users.id."""
    cursor.execute(
        """
        SELECT k.TABLE_NAME, k.COLUMN_NAME, k.CONSTRAINT_NAME, r.UPDATE_RULE, r.DELETE_RULE
        FROM information_schema.KEY_COLUMN_USAGE k
        JOIN information_schema.REFERENTIAL_CONSTRAINTS r
          ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA
         AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
         AND r.TABLE_NAME = k.TABLE_NAME
        WHERE k.TABLE_SCHEMA = DATABASE()
          AND k.REFERENCED_TABLE_NAME = 'users' AND k.REFERENCED_COLUMN_NAME = 'id'
        ORDER BY k.TABLE_NAME, k.COLUMN_NAME
        """
    )
    return list(cursor.fetchall())


def _columns(cursor, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(type, nullable, collation) of each wanted column that exists."""
    cursor.execute(
        """
        SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME
        FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()
        """
    )
    wanted_set = set(wanted)
    return {
        (table, column): (kind, nullable, collation)
        for table, column, kind, nullable, collation in cursor.fetchall()
        if (table, column) in wanted_set
    }


def _set_collation(schema_editor, collation: str) -> None:
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        foreign_keys = _foreign_keys_to_users(cursor)
        fk_columns = [(table, column) for table, column, *_ in foreign_keys]
        columns = _columns(cursor, COLUMNS + fk_columns)
    stale = [key for key in COLUMNS + fk_columns if key in columns and columns[key][2] != collation]
    if not stale:
        return
    touches_users = any(key == ("users", "id") or key in fk_columns for key in stale)
    if touches_users:
        # A foreign key column must have the collation of the column it points to: drop the
        # foreign keys, change both ends of all of them, and add them again.
        for table, _column, constraint, _update, _delete in foreign_keys:
            schema_editor.execute(f"ALTER TABLE {quote(table)} DROP FOREIGN KEY {quote(constraint)}")
        stale = [("users", "id"), *fk_columns, *stale]
    by_table: dict[str, list[str]] = {}
    for table, column in dict.fromkeys(stale):
        kind, nullable, _ = columns[(table, column)]
        null = "NULL" if nullable == "YES" else "NOT NULL"
        by_table.setdefault(table, []).append(
            f"MODIFY {quote(column)} {kind} CHARACTER SET utf8mb4 COLLATE {collation} {null}"
        )
    for table, changes in by_table.items():
        schema_editor.execute(f"ALTER TABLE {quote(table)} {', '.join(changes)}")
    if touches_users:
        for table, column, constraint, on_update, on_delete in foreign_keys:
            schema_editor.execute(
                f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(constraint)} "
                f"FOREIGN KEY ({quote(column)}) REFERENCES {quote('users')} ({quote('id')}) "
                f"ON UPDATE {on_update} ON DELETE {on_delete}"
            )


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "mysql":
        _set_collation(schema_editor, exact_collation(schema_editor.connection))


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "mysql":
        _set_collation(schema_editor, PAD_COLLATION)


class Migration(migrations.Migration):

    # Every table with an ExactCharField or a foreign key to users exists by then.
    dependencies = [
        ('segflow', '0006_outbox_moves_to_delivery'),
        ('campaigns', '0002_cursor_claims'),
        ('delivery', '0002_outbox_moves_here'),
        ('segments', '0001_initial'),
        ('email_templates', '0001_initial'),
        ('transactions', '0001_initial'),
    ]

    # Not in a transaction: MySQL and MariaDB cannot roll DDL back, and Django refuses DDL in one.
    operations = [migrations.RunPython(forwards, backwards, atomic=False, elidable=False)]
