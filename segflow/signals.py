"""Database connection set-up that makes segment SQL written for MySQL run on SQLite too."""

from django.db.backends.signals import connection_created
from django.dispatch import receiver


def _json_unquote(value):
    # SQLite's JSON_EXTRACT already returns strings unquoted, where MySQL's returns JSON text that
    # needs JSON_UNQUOTE. Giving SQLite a JSON_UNQUOTE that passes values through lets one query
    # text, JSON_UNQUOTE(JSON_EXTRACT(...)), run alike on both.
    return value


@receiver(connection_created)
def add_mysql_functions_to_sqlite(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("JSON_UNQUOTE", 1, _json_unquote, deterministic=True)
