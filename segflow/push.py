"""`segflow_push`: diff the config against what is stored, and apply the difference.

A push runs in one database transaction. A dry run runs the very same code and rolls it back, so
the plan it prints is exactly what a real push would do, and nothing is sent: emails leave only
after a commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns import audience, runner
from campaigns.models import Campaign, Cursor
from segments import services as segments
from segments.models import Segment
from templates.models import EmailTemplate
from templates.rendering import RenderError, check_template
from transactions.models import Transaction

from .config import Config
from .dispatch import enqueue
from .live_config import live_config
from .models import Push
from .pipeline import refresh_segment
from .schedule import ensure_periodic_tasks


class PushError(Exception):
    """The config cannot be applied; nothing was changed."""


@dataclass
class PlanLine:
    sign: str  # + added, ~ changed, - removed
    name: str
    detail: str = ""

    def __str__(self) -> str:
        return f"  {self.sign} {self.name}{': ' + self.detail if self.detail else ''}"


@dataclass
class PushPlan:
    location: str
    dry_run: bool
    sections: dict[str, list[PlanLine]] = field(default_factory=dict)

    def add(self, section: str, sign: str, name: str, detail: str = "") -> PlanLine:
        line = PlanLine(sign, name, detail)
        self.sections.setdefault(section, []).append(line)
        return line

    def find(self, section: str, name: str) -> PlanLine | None:
        return next((line for line in self.sections.get(section, []) if line.name == name), None)

    @property
    def has_changes(self) -> bool:
        return any(self.sections.values())

    def render(self) -> str:
        if not self.has_changes:
            return f"Nothing to change: what is stored already matches {self.location}."
        lines = [
            f"Plan for {self.location}"
            + (" (dry run: nothing was changed)" if self.dry_run else "")
        ]
        for section in ("Email provider", "Templates", "Transactions", "Segments", "Campaigns"):
            if self.sections.get(section):
                lines.append(section)
                lines.extend(str(line) for line in self.sections[section])
        return "\n".join(lines)


def push(config: Config, *, dry_run: bool = False, now: datetime | None = None) -> PushPlan:
    """Apply `config` (or, with dry_run, only say what applying it would do)."""
    now = now or timezone.now()
    plan = PushPlan(location=config.location, dry_run=dry_run)
    for section, contents in (
        ("templates", config.templates),
        ("transactions", config.transactions),
    ):
        for content in contents.values():
            try:
                check_template(content, config.base_dir)
            except RenderError as exc:
                raise PushError(f"{section}.{content.name}: {exc}") from exc
    with transaction.atomic():
        _diff_email_provider(config, plan)
        _sync_named(EmailTemplate, config.templates, plan, "Templates", now)
        _sync_named(
            Transaction,
            config.transactions,
            plan,
            "Transactions",
            now,
            extra=lambda d: {"event": d.event},
            describe=lambda d: f'on event "{d.event}"',
        )
        changed_segments = _sync_segments(config, plan, now)
        touched_campaigns, changed_flows = _sync_campaigns(config, plan, now)
        _evaluate(config, plan, changed_segments, touched_campaigns, now)
        _check_in_flight(config, plan, changed_flows, now)
        if plan.has_changes:
            Push.objects.create(
                created_at=now,
                fingerprint=config.fingerprint,
                location=config.location,
                email_provider=config.email_provider.describe() if config.email_provider else {},
                plan=plan.render(),
            )
        ensure_periodic_tasks()
        if dry_run:
            transaction.set_rollback(True)
        else:
            transaction.on_commit(lambda: live_config.set(config))
            if not settings.SEGFLOW_TASKS_INLINE:
                # Workers start the new cursors now. Embedded, the ticker does within a second:
                # a push is a config change, and sends nothing itself.
                transaction.on_commit(lambda: enqueue("run_due_cursors"))
    return plan


def _diff_email_provider(config: Config, plan: PushPlan) -> None:
    stored = Push.objects.order_by("-id").values_list("email_provider", flat=True).first()
    wanted = config.email_provider.describe() if config.email_provider else {}
    if (stored or {}) != wanted:
        if wanted:
            plan.add(
                "Email provider",
                "~" if stored else "+",
                wanted["name"],
                f"from {wanted['from_address']}",
            )
        else:
            plan.add("Email provider", "-", stored["name"], "Django's EMAIL_BACKEND delivers")


def _sync_named(
    model,
    definitions: dict,
    plan: PushPlan,
    section: str,
    now: datetime,
    *,
    extra=lambda d: {},
    describe=lambda d: "",
) -> None:
    stored = {row.name: row for row in model.objects.all()}
    for name, definition in definitions.items():
        row = stored.get(name)
        fields = {
            "source": definition.source,
            "fingerprint": definition.fingerprint,
            **extra(definition),
        }
        if row is None:
            model.objects.create(name=name, created_at=now, updated_at=now, **fields)
            plan.add(section, "+", name, describe(definition))
        elif row.fingerprint != definition.fingerprint:
            model.objects.filter(pk=row.pk).update(updated_at=now, **fields)
            plan.add(section, "~", name, describe(definition))
    for name, row in stored.items():
        if name not in definitions:
            row.delete()
            plan.add(section, "-", name)


def _sync_segments(config: Config, plan: PushPlan, now: datetime) -> list[Segment]:
    """Store added and changed segments; return the rows whose members must be evaluated."""
    stored = {row.name: row for row in Segment.objects.all()}
    changed: list[Segment] = []
    for name, definition in config.segments.items():
        try:
            segments.check_query(definition, now)
            reads_users, reads_events = segments.tables_read(definition, now)
        except segments.SegmentError as exc:
            raise PushError(str(exc)) from exc
        fields = {
            "kind": definition.kind,
            "source": definition.source,
            "fingerprint": definition.fingerprint,
            "reads_users": reads_users,
            "reads_events": reads_events,
            "refresh_seconds": int(definition.refresh_every.total_seconds())
            if definition.refresh_every
            else None,
        }
        row = stored.get(name)
        if row is None:
            row = Segment.objects.create(name=name, created_at=now, updated_at=now, **fields)
            plan.add("Segments", "+", name, definition.kind)
            changed.append(row)
        elif row.fingerprint != definition.fingerprint:
            Segment.objects.filter(pk=row.pk).update(updated_at=now, **fields)
            row.refresh_from_db()
            plan.add("Segments", "~", name, definition.kind)
            changed.append(row)
    for name, row in stored.items():
        if name not in config.segments:
            members = row.memberships.count()
            row.delete()
            plan.add("Segments", "-", name, f"removed, {members} membership(s) dropped")
    return changed


def _sync_campaigns(config: Config, plan: PushPlan, now: datetime):
    """Store campaigns; return (campaigns to reconcile, campaigns whose flow changed)."""
    stored = {row.name: row for row in Campaign.objects.all()}
    touched: list[Campaign] = []
    changed_flows: list[Campaign] = []
    for name, definition in config.campaigns.items():
        fields = {
            "behavior": definition.behavior,
            "segments": list(definition.segments),
            "exclude_segments": list(definition.exclude_segments),
            "source": definition.source,
            "fingerprint": definition.fingerprint,
            "flow_fingerprint": definition.flow_fingerprint,
            "active": True,
            "removed_at": None,
        }
        row = stored.get(name)
        if row is None or not row.active:
            if row is None:
                row = Campaign.objects.create(name=name, created_at=now, updated_at=now, **fields)
            else:
                Campaign.objects.filter(pk=row.pk).update(updated_at=now, **fields)
                row.refresh_from_db()
            plan.add("Campaigns", "+", name, definition.behavior)
            touched.append(row)
        elif row.fingerprint != definition.fingerprint:
            what = [
                label
                for label, old, new in (
                    ("flow", row.flow_fingerprint, definition.flow_fingerprint),
                    ("behavior", row.behavior, definition.behavior),
                    ("segments", row.segments, list(definition.segments)),
                    ("excluded segments", row.exclude_segments, list(definition.exclude_segments)),
                )
                if old != new
            ]
            if row.flow_fingerprint != definition.flow_fingerprint:
                changed_flows.append(row)
            Campaign.objects.filter(pk=row.pk).update(updated_at=now, **fields)
            row.refresh_from_db()
            plan.add("Campaigns", "~", name, f"{', '.join(what)} changed")
            touched.append(row)
    for name, row in stored.items():
        if name not in config.campaigns and row.active:
            ended = audience.end_campaign(row, now, "the campaign was removed from the config")
            plan.add("Campaigns", "-", name, f"removed, {ended} active cursor(s) ended")
    return touched, changed_flows


def _evaluate(
    config: Config,
    plan: PushPlan,
    changed_segments: list[Segment],
    touched_campaigns: list[Campaign],
    now: datetime,
) -> None:
    campaign_changes: dict[str, audience.AudienceChange] = {}
    for row in changed_segments:
        count, changes = refresh_segment(row, config.segments[row.name], now)
        line = plan.find("Segments", row.name)
        line.detail += f", {count.entered} user(s) entered, {count.left} left"
        for name, change in changes.items():
            _add_change(campaign_changes, name, change)
    for row in touched_campaigns:
        row.refresh_from_db()
        _add_change(campaign_changes, row.name, audience.reconcile_campaign(row, now))
    for name, change in campaign_changes.items():
        line = plan.find("Campaigns", name)
        detail = f"{change.entered} user(s) enter" + (
            f", {change.exited} exit" if change.exited else ""
        )
        if line is None:
            if change.entered or change.exited:
                plan.add("Campaigns", "~", name, f"audience changed, {detail}")
        else:
            line.detail += f", {detail}"


def _add_change(into: dict, name: str, change: audience.AudienceChange) -> None:
    before = into.get(name, audience.AudienceChange(0, 0))
    into[name] = audience.AudienceChange(
        before.entered + change.entered, before.exited + change.exited
    )


def _check_in_flight(
    config: Config, plan: PushPlan, changed_flows: list[Campaign], now: datetime
) -> None:
    """Replay the users already in a changed flow; end the cursors the new code diverges on."""
    for row in changed_flows:
        definition = config.campaigns[row.name]
        clean = diverged = 0
        active = Cursor.objects.filter(campaign=row, status=Cursor.Status.ACTIVE, step_count__gt=0)
        cursors = active.select_related("campaign").prefetch_related("steps")
        for cursor in cursors.iterator(chunk_size=500):
            reason = runner.replay_check(cursor, definition)
            if reason is None:
                clean += 1
                continue
            diverged += 1
            runner.end_cursor(cursor, Cursor.Status.DIVERGED, reason, now)
            cursor.updated_at = now
            cursor.save(
                update_fields=["status", "due_at", "ended_at", "end_reason", "error", "updated_at"]
            )
        line = plan.find("Campaigns", row.name)
        line.detail += (
            f"; {clean + diverged} user(s) in flight: {clean} replay cleanly on the new flow, "
            f"{diverged} diverge and end"
        )
