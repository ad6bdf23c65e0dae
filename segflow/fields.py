from django.db import models

# MariaDB's and MySQL 8's binary collations that compare every byte, trailing spaces included.
# (`utf8mb4_bin` is a PAD SPACE collation: there 'jane' and 'jane ' were the same id.)
MARIADB_EXACT_COLLATION = "utf8mb4_nopad_bin"
MYSQL_EXACT_COLLATION = "utf8mb4_0900_bin"


def exact_collation(connection) -> str | None:
    """The collation that compares text exactly on `connection`'s server; None where the
    database's own comparison already does (SQLite compares bytes, with no padding)."""
    if connection.vendor != "mysql":
        return None
    return MARIADB_EXACT_COLLATION if connection.mysql_is_mariadb else MYSQL_EXACT_COLLATION


class ExactCharField(models.CharField):
    """A CharField compared byte for byte on every database.

    MySQL's default collations fold case and accents, so 'Jane' and 'jane' would be one user id
    there and two on SQLite; and a PAD SPACE collation (even `utf8mb4_bin`) ignores trailing
    spaces, so 'jane ' would be 'jane'. A binary NO PAD collation makes ids and names behave
    alike everywhere. A foreign key to such a field takes its collation (Django gives a foreign
    key column the collation of the column it points to).
    """

    def db_parameters(self, connection):
        params = super().db_parameters(connection)
        collation = exact_collation(connection)
        if collation:
            params["collation"] = collation
        return params
