from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import localtime

from delivery.models import OutboxEmail
from segflow.admin_base import Bar, CodeDefinedAdmin, ReadOnlyAdmin, bar_chart, status_badge
from segflow.paginators import CappedPaginator
from segflow.versions import config_of

from . import progress
from .models import Campaign, Cursor

# What finds a campaign's flow function, to name the line of code each step waits at; the top
# of the admin (segflow/admin.py) sets it to the running config's. None: no lines are shown.
FlowLookup = Callable[[Campaign], Callable | None]


def changelist(model, **params) -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@admin.register(Campaign)
class CampaignAdmin(CodeDefinedAdmin):
    flow_lookup: FlowLookup | None = None

    list_display = (
        "name",
        "behavior",
        "state",
        "segment_names",
        "in_flow",
        "completed",
        "exited",
        "failures",
        "sent_24h",
    )
    list_filter = ("active", "behavior")
    search_fields = ("name",)
    fields = ("name", "behavior", "segment_links", "source_code", "created_at", "updated_at")
    readonly_fields = fields

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        summaries = progress.summaries(list(changelist.result_list))
        for campaign in changelist.result_list:
            campaign.summary = summaries[campaign.pk]
        return changelist

    @admin.display(description="state")
    def state(self, obj):
        if obj.active:
            return status_badge("active", "running")
        removed = f"removed {obj.removed_at:%Y-%m-%d}" if obj.removed_at else "removed"
        return status_badge("ended", removed)

    @admin.display(description="segments")
    def segment_names(self, obj):
        text = ", ".join(obj.segments)
        if obj.exclude_segments:
            text += " (not " + ", ".join(obj.exclude_segments) + ")"
        return text

    def _count(self, obj, status: str, label: str = ""):
        n = obj.summary.by_status.get(status, 0)
        url = changelist(Cursor, campaign__id__exact=obj.pk, status__exact=status)
        return format_html('<a href="{}" title="{}">{}</a>', url, label or status, f"{n:,}")

    @admin.display(description="in the flow now")
    def in_flow(self, obj):
        return self._count(obj, Cursor.Status.ACTIVE, "active cursors")

    @admin.display(description="completed")
    def completed(self, obj):
        return self._count(obj, Cursor.Status.COMPLETED)

    @admin.display(description="exited (left the audience)")
    def exited(self, obj):
        return self._count(obj, Cursor.Status.EXITED)

    @admin.display(description="failed or diverged")
    def failures(self, obj):
        failed = obj.summary.by_status.get(Cursor.Status.FAILED, 0)
        diverged = obj.summary.by_status.get(Cursor.Status.DIVERGED, 0)
        if not failed and not diverged:
            return mark_safe('<span class="sf-zero">0</span>')
        parts = []
        for status, n in ((Cursor.Status.FAILED, failed), (Cursor.Status.DIVERGED, diverged)):
            if n:
                url = changelist(Cursor, campaign__id__exact=obj.pk, status__exact=status)
                parts.append(format_html('<a href="{}">{} {}</a>', url, f"{n:,}", status))
        return format_html(
            '<span class="sf-failmark" title="this campaign has failures">⚠ {}</span>',
            format_html_join(", ", "{}", ((p,) for p in parts)),
        )

    @admin.display(description="emails sent, last 24 h")
    def sent_24h(self, obj):
        since = progress.sends_window_start(timezone.now())
        url = changelist(OutboxEmail, campaign_name=obj.name, sent_at__gte=_iso(since))
        return format_html('<a href="{}">{}</a>', url, f"{obj.summary.sent_24h:,}")

    @admin.display(description="segments")
    def segment_links(self, obj):
        from segments.models import Segment

        ids = dict(
            Segment.objects.filter(name__in=[*obj.segments, *obj.exclude_segments]).values_list(
                "name", "pk"
            )
        )

        def link(name):
            if name not in ids:
                return name
            url = reverse("admin:segments_segment_change", args=[ids[name]])
            return format_html('<a href="{}">{}</a>', url, name)

        included = format_html_join(", ", "{}", ((link(n),) for n in obj.segments))
        if not obj.exclude_segments:
            return included
        excluded = format_html_join(", ", "{}", ((link(n),) for n in obj.exclude_segments))
        return format_html("{}; not in {}", included, excluded)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if campaign is not None:
            flow = self.flow_lookup(campaign) if self.flow_lookup else None
            context["progress"] = self._progress_context(campaign, flow)
        return super().change_view(request, object_id, form_url, context)

    def _progress_context(self, campaign: Campaign, flow) -> dict:
        now = timezone.now()
        p = progress.progress(campaign, flow, now)

        def cursors(**params):
            return changelist(Cursor, campaign__id__exact=campaign.pk, **params)

        def emails(template: str, **params):
            return changelist(
                OutboxEmail, campaign_name=campaign.name, template_name=template, **params
            )

        statuses = [
            {
                "status": value,
                "label": label,
                "n": p.by_status.get(value, 0),
                "url": cursors(status__exact=value),
                "alert": value in (Cursor.Status.FAILED, Cursor.Status.DIVERGED)
                and p.by_status.get(value, 0) > 0,
            }
            for value, label in Cursor.Status.choices
            if value != Cursor.Status.ENDED or p.by_status.get(value)
        ]
        steps = [
            {
                "group": group,
                "url": cursors(status__exact=Cursor.Status.ACTIVE, step_count=group.step_count),
                "example": reverse("admin:campaigns_cursor_change", args=[group.example_cursor])
                if group.example_cursor
                else "",
            }
            for group in p.steps
        ]
        errors = [
            {
                "error": error,
                "url": cursors(status__exact=error.status, end_reason__startswith=error.reason),
            }
            for error in p.errors
        ]
        email_rows = []
        for row in p.emails:
            cells = []
            for figure in p.email_figures:
                if figure in ("delivered", "bounced", "complained", "opened", "clicked"):
                    url = emails(row.template, **{f"{figure}_at__isnull": "False"})
                elif figure == "unsubscribed":
                    url = (
                        reverse("admin:delivery_unsubscription_changelist")
                        + "?"
                        + urlencode(
                            {
                                "outbox_email__campaign_name": campaign.name,
                                "outbox_email__template_name": row.template,
                            }
                        )
                    )
                elif figure == "queued":  # counted with those being sent right now
                    url = emails(row.template, status__in="queued,sending")
                else:
                    url = emails(row.template, status__exact=figure)
                cells.append({"n": row.figures.get(figure, 0), "url": url})
            reasons = [
                {
                    "status": status,
                    "reason": reason,
                    "n": n,
                    "url": emails(row.template, status__exact=status, reason__startswith=reason),
                }
                for status, reason, n in row.reasons
            ]
            email_rows.append({"template": row.template, "cells": cells, "reasons": reasons})
        groups = []
        for day in p.days:
            start = datetime(day.day.year, day.day.month, day.day.day, tzinfo=now.tzinfo)
            window = {"__gte": _iso(start), "__lt": _iso(start + timedelta(days=1))}
            entered_url = cursors(**{f"created_at{k}": v for k, v in window.items()})
            sent_url = changelist(
                OutboxEmail,
                campaign_name=campaign.name,
                **{f"sent_at{k}": v for k, v in window.items()},
            )
            groups.append(
                (
                    f"{day.day:%b %d}",
                    [
                        Bar(day.entries, entered_url, f"{day.day:%Y-%m-%d}: {day.entries} entered"),
                        Bar(day.sends, sent_url, f"{day.day:%Y-%m-%d}: {day.sends} emails sent"),
                    ],
                )
            )
        return {
            "p": p,
            "entered_url": cursors(),
            "statuses": statuses,
            "steps": steps,
            "errors": errors,
            "email_figures": p.email_figures,
            "email_rows": email_rows,
            "splits": [
                {
                    "name": split.name,
                    "users": split.users,
                    "branches": [
                        {"branch": branch, "n": n, "share": f"{split.share(branch):.1%}"}
                        for branch, n in split.branches.items()
                    ],
                }
                for split in p.splits
            ],
            "chart": bar_chart(groups, ["users entered", "emails sent"]),
            "flow_known": self.flow_lookup is not None,
        }


def _pinned_flow(cursor: Cursor):
    """The old flow a push left the cursor on, for the lines of its steps (None if gone)."""
    try:
        definition = config_of(cursor.pinned_version).campaigns.get(cursor.campaign.name)
    except Exception:  # a version that does not load shows no lines, never a broken page
        return None
    return definition.flow if definition is not None else None


@admin.register(Cursor)
class CursorAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user_link",
        "campaign_name",
        "status_label",
        "steps",
        "next_or_end",
        "created_at",
    )
    list_filter = ("status", "campaign")
    search_fields = ("=user__id",)
    # No join at all: with one, MariaDB reads every cursor to find the newest hundred. The
    # campaigns' names are read once for the page (get_changelist_instance).
    list_select_related = False
    show_full_result_count = False
    paginator = CappedPaginator
    # The page's panels show the rest (campaigns/templates/admin/campaigns/cursor/).
    fields = ("user", "campaign", "end_reason")
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="user", ordering="user_id")
    def user_link(self, obj):
        url = reverse("admin:segflow_user_change", args=[quote(obj.user_id)])
        return format_html('<a href="{}">{}</a>', url, obj.user_id)

    @admin.display(description="steps", ordering="step_count")
    def steps(self, obj):
        return obj.step_count

    @admin.display(description="next step due, or ended", ordering="due_at")
    def next_or_end(self, obj):
        # One column for both moments, so that the list fits a laptop's screen.
        moment = obj.due_at if obj.status == Cursor.Status.ACTIVE else obj.ended_at
        if moment is None:
            return "-"
        text = date_format(localtime(moment), "DATETIME_FORMAT")
        return f"due {text}" if obj.status == Cursor.Status.ACTIVE else f"ended {text}"

    @admin.display(description="campaign", ordering="campaign_id")
    def campaign_name(self, obj):
        return getattr(obj, "campaign_label", obj.campaign_id)

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        names = dict(Campaign.objects.values_list("pk", "name"))
        for cursor in changelist.result_list:
            cursor.campaign_label = names.get(cursor.campaign_id, cursor.campaign_id)
        return changelist

    def change_view(self, request, object_id, form_url="", extra_context=None):
        cursor = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if cursor is not None:
            lookup = CampaignAdmin.flow_lookup
            flow = lookup(cursor.campaign) if lookup else None
            if cursor.pinned_version is not None:
                flow = _pinned_flow(cursor)
            context["story"] = progress.cursor_story(cursor, flow)
            context["status_badge"] = status_badge(cursor.status, cursor.get_status_display())
        return super().change_view(request, object_id, form_url, context)
