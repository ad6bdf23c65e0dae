from django.db import models


class ExactCharField(models.CharField):
    """A CharField compared byte for byte on every database.

    MySQL's default collations fold case and accents, so 'Jane' and 'jane' would be one user id
    there and two on SQLite. Binary collation makes ids and event names behave alike everywhere.
    """

    def db_parameters(self, connection):
        params = super().db_parameters(connection)
        if connection.vendor == "mysql":
            params["collation"] = "utf8mb4_bin"
        return params
