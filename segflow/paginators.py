"""A paginator for the admin's lists of tables that keep growing: it counts at most CAP rows,
so a list page never counts a whole table."""

from django.core.paginator import Paginator
from django.utils.functional import cached_property

CAP = 10_000


class CappedPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        """The number of rows, counted up to CAP + 1 (past CAP the last pages are not listed)."""
        rows = self.object_list
        if hasattr(rows, "order_by"):
            return rows.order_by()[: CAP + 1].count()
        return len(rows)
