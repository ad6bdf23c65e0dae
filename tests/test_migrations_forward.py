"""A database migrated by today's code migrates forward to the newest migrations with every row
intact.

The test migrates segflow's own apps back to a fixed "old" point, fills every one of their tables
through the historical models, snapshots the rows with raw SQL, migrates forward to the newest
leaf nodes and compares. It knows nothing about what the newer migrations do, so it checks
whichever migrations exist when it runs (a model moved between apps, a column added, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from graphlib import TopologicalSorter
from typing import Any

import pytest
from django.apps import apps as current_apps
from django.apps.registry import Apps
from django.db import connection, models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.migrations.executor import MigrationExecutor

# The state of main before the re-cut that moves models between apps (e.g. OutboxEmail, table
# `outbox`, from segflow to delivery): the last migration of each of segflow's own apps then.
# A database in production is at exactly this point; it must migrate forward losing nothing.
# App labels, not folders: the app in templates/ is labelled email_templates.
OLD_TARGETS: list[tuple[str, str]] = [
    ("segflow", "0005_outbox_cursor_index"),
    ("campaigns", "0002_cursor_claims"),
    ("segments", "0001_initial"),
    ("delivery", "0001_suppressions_and_unsubscriptions"),
    ("email_templates", "0001_initial"),
    ("transactions", "0001_initial"),
]

# Columns in the old state that hold another table's id without a foreign key. A real database
# holds real ids there, so the test does too (a migration may turn one into a foreign key).
SOFT_REFERENCES: dict[tuple[str, str], str] = {
    ("outbox", "cursor_id"): "campaign_cursors",
}

ROWS_PER_TABLE = 2
# Row 0 fills every column; row 1 leaves every nullable column NULL, so both kinds are checked.
NULL_ROW = 1

BASE_TIME = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
TEXT = "«ünïcødé» ✉🚀 'single' \"double\" back\\slash\nsecond line\ttab"
INTEGER_RANGES = BaseDatabaseOperations.integer_field_ranges


def migrate(targets: Iterable[tuple[str, str]]) -> MigrationExecutor:
    """Migrate the test database to `targets`; return a fresh executor that sees the result."""
    executor = MigrationExecutor(connection)
    executor.migrate(list(targets))
    # The loader caches what is applied: read it again for whatever comes next.
    return MigrationExecutor(connection)


def head_nodes() -> list[tuple[str, str]]:
    """The newest migration of every app, as the migration files on disk say now."""
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def old_models(state_apps: Apps) -> list[type[models.Model]]:
    """The models of segflow's own apps in the old state that own a table."""
    labels = {label for label, _ in OLD_TARGETS}
    return [
        model
        for model in state_apps.get_models(include_auto_created=True)
        if model._meta.app_label in labels and model._meta.managed and not model._meta.proxy
    ]


def references(model: type[models.Model]) -> Iterator[tuple[models.Field, str]]:
    """(field, referenced table) for every column of `model` that holds another row's id."""
    for field in model._meta.concrete_fields:
        if field.is_relation:
            yield field, field.related_model._meta.db_table
        elif (model._meta.db_table, field.column) in SOFT_REFERENCES:
            yield field, SOFT_REFERENCES[model._meta.db_table, field.column]


def fill_order(old: list[type[models.Model]]) -> list[type[models.Model]]:
    """Referenced tables before the tables referring to them (users before events, ...)."""
    by_table = {model._meta.db_table: model for model in old}
    for table, column in SOFT_REFERENCES:
        assert table in by_table, f"SOFT_REFERENCES names {table}, not a table of the old state"
        columns = {field.column for field in by_table[table]._meta.concrete_fields}
        assert column in columns, f"SOFT_REFERENCES names {table}.{column}, not a column of it"
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for table in sorted(by_table):
        targets = {target for _, target in references(by_table[table]) if target != table}
        missing = targets - by_table.keys()
        assert not missing, f"{table} refers to {missing}, outside the apps this test fills"
        sorter.add(table, *sorted(targets))
    return [by_table[table] for table in sorter.static_order()]


def sample_value(table: str, field: models.Field, row: int, position: int) -> Any:
    """A value for a non-relation column that a lost or truncated column would not keep."""
    if field.null and row == NULL_ROW:
        return None
    if field.choices:
        values = [value for value, _ in field.flatchoices]
        return values[(row + position) % len(values)]
    kind = field.get_internal_type()
    if kind in ("CharField", "SlugField", "EmailField", "URLField", "FilePathField", "FileField"):
        # The row number first: unique columns stay unique when max_length cuts the rest off.
        return f"{row}✉{field.column} {TEXT}"[: field.max_length]
    if kind == "TextField":
        return f"{row} {field.column}: {TEXT}\n" * 3
    if kind == "JSONField":
        return {
            "row": row,
            "column": field.column,
            "nested": {"list": [1, 2.5, None, True, "ü✉🚀"], "empty": {}, "deep": [{"a": []}]},
            "quotes": "'\"\\",
        }
    if kind == "BooleanField":
        return (row + position) % 2 == 0
    if kind == "DateTimeField":
        return BASE_TIME + timedelta(days=row, minutes=position, microseconds=row)
    if kind == "DateField":
        return (BASE_TIME + timedelta(days=row + position)).date()
    if kind == "TimeField":
        return time(13, 14, position % 60, 654321 - row)
    if kind == "DurationField":
        return timedelta(days=position, seconds=row, microseconds=7)
    if kind in INTEGER_RANGES:
        # Close to the top of the range: a column narrowed by a migration would not hold it.
        return INTEGER_RANGES[kind][1] - 10 * row - position
    if kind == "DecimalField":
        digits = "9" * (field.max_digits - field.decimal_places)
        return Decimal(f"{digits}.{'7' * field.decimal_places}") - row
    if kind == "FloatField":
        return 1234.5 + row + position / 4
    if kind == "UUIDField":
        return uuid.uuid5(uuid.NAMESPACE_URL, f"segflow/{table}/{field.column}/{row}")
    if kind == "BinaryField":
        return bytes([0, 1, 127, 128, 255, row, position % 256])
    if kind == "GenericIPAddressField":
        return f"2001:db8::{row + 1}:{position + 1}"
    # A new kind of field must get a value here rather than be left out of the check.
    raise TypeError(f"No sample value for {kind} {table}.{field.column}")


def fill(ordered: list[type[models.Model]]) -> None:
    """Write ROWS_PER_TABLE rows into every table, through the historical models, in the order
    fill_order gives."""
    written: dict[str, list[models.Model]] = {}
    for model in ordered:
        table = model._meta.db_table
        referenced = dict(references(model))
        rows = written.setdefault(table, [])
        for row in range(ROWS_PER_TABLE):
            values: dict[str, Any] = {}
            for position, field in enumerate(model._meta.concrete_fields):
                if isinstance(field, models.AutoField):
                    continue  # The database hands the id out.
                if field not in referenced:
                    values[field.attname] = sample_value(table, field, row, position)
                elif field.null and row == NULL_ROW:
                    values[field.attname] = None
                else:
                    # Row n refers to the referenced table's row n: one-to-one columns and
                    # unique pairs stay unique.
                    parents = written[referenced[field]]
                    assert parents, f"{table}.{field.column} needs a row in {referenced[field]}"
                    parent = parents[row % len(parents)]
                    target = getattr(field, "target_field", parent._meta.pk)
                    values[field.attname] = getattr(parent, target.attname)
            rows.append(model._base_manager.create(**values))


def read_table(table: str, pk_column: str) -> list[dict[str, Any]]:
    """Every row of `table` as the database returns it, column by column, in id order."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {quote(table)} ORDER BY {quote(pk_column)}")
        columns = [description[0] for description in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def differences(
    table: str, pk_column: str, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[str]:
    """What changed in `table`: rows lost or added, old columns gone, values altered."""
    problems = []
    before_by_pk = {row[pk_column]: row for row in before}
    after_by_pk = {row[pk_column]: row for row in after}
    if lost := before_by_pk.keys() - after_by_pk.keys():
        problems.append(f"{table}: rows {sorted(lost)} are gone")
    if added := after_by_pk.keys() - before_by_pk.keys():
        problems.append(f"{table}: rows {sorted(added)} appeared")
    if before and after and (gone := before[0].keys() - after[0].keys()):
        problems.append(f"{table}: columns {sorted(gone)} are gone")
    for pk in sorted(before_by_pk.keys() & after_by_pk.keys()):
        for column, value in before_by_pk[pk].items():
            if column in after_by_pk[pk] and after_by_pk[pk][column] != value:
                new = after_by_pk[pk][column]
                problems.append(f"{table} row {pk}: {column} was {value!r}, is now {new!r}")
    return problems


def current_model(table: str) -> type[models.Model] | None:
    """The model of today's code that owns `table`."""
    for model in current_apps.get_models(include_auto_created=True):
        if model._meta.db_table == table and not model._meta.proxy:
            return model
    return None


def empty_tables(tables: list[str]) -> None:
    """Delete every row the test wrote, referring tables first, from the tables still there."""
    existing = set(connection.introspection.table_names())
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in tables:
            if table in existing:
                cursor.execute(f"DELETE FROM {quote(table)}")


@pytest.mark.django_db(transaction=True)
def test_old_database_migrates_forward_with_every_row_intact():
    executor = MigrationExecutor(connection)
    nodes = executor.loader.graph.nodes
    for target in OLD_TARGETS:
        assert target in nodes, f"migration {target} of the old state no longer exists"

    tables: list[str] = []  # In fill order; emptied in reverse, referring tables first.
    try:
        # Only segflow's own apps go back: django's and third-party apps stay at their heads.
        executor = migrate(OLD_TARGETS)
        old = fill_order(old_models(executor.loader.project_state(OLD_TARGETS).apps))
        pk_columns = {model._meta.db_table: model._meta.pk.column for model in old}

        # Emptying the tables at the end must delete nothing but what the test wrote.
        for table, pk_column in pk_columns.items():
            assert read_table(table, pk_column) == [], f"{table} is not empty"
        tables = [model._meta.db_table for model in old]
        fill(old)
        before = {table: read_table(table, pk_columns[table]) for table in tables}
        assert all(len(rows) == ROWS_PER_TABLE for rows in before.values()), before

        migrate(head_nodes())

        existing = set(connection.introspection.table_names())
        gone = [table for table in tables if table not in existing]
        assert not gone, f"tables gone after migrating forward: {gone}"
        problems = []
        for table in tables:
            after = read_table(table, pk_columns[table])
            problems += differences(table, pk_columns[table], before[table], after)
        assert not problems, "\n".join(problems)

        # Today's models read every row back: each column's value converts (JSON, dates, ...).
        for table in tables:
            model = current_model(table)
            assert model is not None, f"no model of the current code owns the table {table}"
            manager = model._base_manager
            assert manager.count() == ROWS_PER_TABLE, table
            pks = [row[pk_columns[table]] for row in before[table]]
            assert [obj.pk for obj in manager.order_by("pk")] == pks, table
    finally:
        # Other tests expect the newest schema and tables without these rows.
        migrate(head_nodes())
        empty_tables(tables[::-1])

    # Left as found: nothing to migrate, no row of the test's.
    assert MigrationExecutor(connection).migration_plan(head_nodes()) == []
    for table in tables:
        assert read_table(table, pk_columns[table]) == [], f"{table} is not empty"


@pytest.mark.django_db
def test_the_models_need_no_migration_that_is_not_written():
    # A model changed without its migration would leave production on a schema the code does
    # not expect (e.g. an index named in code, segflow.models.QUEUE_INDEX, that no migration made).
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit:
        pytest.fail(f"models and migrations differ; run makemigrations:\n{out.getvalue()}")
