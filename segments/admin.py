from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.html import format_html

from segflow.admin_base import CodeDefinedAdmin, ReadOnlyAdmin, line_chart
from segflow.paginators import CappedPaginator

from . import history, tallies
from .models import MembershipHistory, Segment, SegmentMembership

MEMBERS_PER_PAGE = 50

# Which campaigns use a segment: (name, admin URL) pairs. The top of the admin
# (segflow/admin.py) sets it, since campaigns sit above segments.
UsedBy = Callable[[Segment], list[tuple[str, str]]]


def when_evaluated(segment: Segment) -> str:
    ways = []
    if segment.reads_users:
        ways.append("when a user's attributes change")
    if segment.reads_events:
        ways.append("when a user's events arrive")
    if segment.refresh_seconds:
        ways.append(f"for everyone every {_every(segment.refresh_seconds)}")
    return ", ".join(ways) or "at pushes only"


def _every(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}s" if n != 1 else unit
    return f"{seconds} seconds"


@admin.register(Segment)
class SegmentAdmin(CodeDefinedAdmin):
    used_by: UsedBy | None = None

    list_display = ("name", "kind", "members", "evaluated", "last_full_evaluation", "updated_at")
    search_fields = ("name",)
    fields = ("name", "kind", "evaluated", "source_code", "created_at", "updated_at")
    readonly_fields = fields

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        sizes = tallies.members([s.pk for s in changelist.result_list])
        for segment in changelist.result_list:
            segment.size = sizes[segment.pk]
        return changelist

    @admin.display(description="members now")
    def members(self, obj):
        url = reverse("admin:segments_segment_change", args=[obj.pk]) + "#sf-members"
        return format_html('<a href="{}">{}</a>', url, f"{obj.size:,}")

    @admin.display(description="evaluated")
    def evaluated(self, obj):
        return when_evaluated(obj)

    @admin.display(description="last evaluated for everyone")
    def last_full_evaluation(self, obj):
        return obj.refreshed_at or "-"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        segment = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if segment is not None:
            context["segment_page"] = self._page(request, segment)
        return super().change_view(request, object_id, form_url, context)

    def _page(self, request, segment: Segment) -> dict:
        query = request.GET.get("q", "").strip()
        after = request.GET.get("after", "")
        rows = SegmentMembership.objects.filter(segment=segment).select_related("user")
        if query:
            rows = rows.filter(user__id__startswith=query)
        if after:
            rows = rows.filter(user__id__gt=after)
        page = list(rows.order_by("user_id")[: MEMBERS_PER_PAGE + 1])
        more = len(page) > MEMBERS_PER_PAGE
        page = page[:MEMBERS_PER_PAGE]
        members = tallies.members([segment.pk])[segment.pk]
        base = {"q": query} if query else {}
        return {
            "members": members,
            "members_url": reverse("admin:segments_segmentmembership_changelist")
            + "?"
            + urlencode({"segment__id__exact": segment.pk}),
            "history_url": reverse("admin:segments_membershiphistory_changelist")
            + "?"
            + urlencode({"segment_id": segment.pk}),
            "evaluation": history.last_evaluation(segment),
            "chart": line_chart(history.size_over_time(segment)),
            "evaluated": when_evaluated(segment),
            "page": page,
            "query": query,
            "after": after,
            "next": "?" + urlencode({**base, "after": page[-1].user_id}) if more else "",
            "first": "?" + urlencode(base) if after else "",
            "used_by": self.used_by(segment) if self.used_by else [],
        }


@admin.register(SegmentMembership)
class SegmentMembershipAdmin(ReadOnlyAdmin):
    list_display = ("segment_name", "user_link", "created_at")
    list_filter = ("segment",)
    search_fields = ("=user__id",)
    # No join: with one, MariaDB reads every membership to find the newest hundred.
    list_select_related = False
    show_full_result_count = False
    paginator = CappedPaginator

    @admin.display(description="segment", ordering="segment_id")
    def segment_name(self, obj):
        return getattr(obj, "segment_label", obj.segment_id)

    @admin.display(description="user", ordering="user_id")
    def user_link(self, obj):
        url = reverse("admin:segflow_user_change", args=[quote(obj.user_id)])
        return format_html('<a href="{}">{}</a>', url, obj.user_id)

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        names = dict(Segment.objects.values_list("pk", "name"))
        for membership in changelist.result_list:
            membership.segment_label = names.get(membership.segment_id, membership.segment_id)
        return changelist


@admin.register(MembershipHistory)
class MembershipHistoryAdmin(ReadOnlyAdmin):
    """Who entered and left which segment, when."""

    list_display = ("at", "user_link", "change", "segment_name")
    list_select_related = False

    @admin.display(description="user", ordering="user_id")
    def user_link(self, obj):
        url = reverse("admin:segflow_user_change", args=[quote(obj.user_id)])
        return format_html('<a href="{}">{}</a>', url, obj.user_id)

    search_fields = ("=user__id",)
    show_full_result_count = False
    paginator = CappedPaginator

    @admin.display(description="", ordering="entered")
    def change(self, obj):
        return "entered" if obj.entered else "left"
