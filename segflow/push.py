"""`segflow_push`: diff the config against what is stored, and apply the difference.

A push runs in one database transaction. A dry run runs the very same code and rolls it back, so
the plan it prints is exactly what a real push would do, and nothing is sent: emails leave only
after a commit.

The config's files are stored too, as a numbered version (`ConfigVersion`): every process runs
the version of the last push (see `segflow.live_config`). A push from this machine
(`push_location`), one over HTTP (`push_bundle`) and a rollback to a stored version (`rollback`)
go through the same `push`, and each attempt, refused or failed ones included, is audited
(`PushAttempt`).
"""

from __future__ import annotations

import getpass
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from campaigns import audience, runner
from campaigns.checks import check_flows
from campaigns.models import Campaign, Cursor
from segments import services as segments
from segments.models import Segment
from templates.checks import missing_templates
from templates.models import EmailTemplate
from templates.rendering import RenderError, check_template
from transactions.models import Transaction

from .config import Bundle, Config, ConfigError, bundle_from_location, load_bundle, load_config
from .config.bundle import check_size, folder_of
from .dispatch import enqueue
from .live_config import live_config
from .models import ConfigVersion, Push, PushAttempt
from .pipeline import refresh_segment
from .schedule import ensure_periodic_tasks


class PushError(Exception):
    """The config cannot be applied; nothing was changed."""


def failure_message(exc: Exception) -> str:
    """What a failed push says, the same from the command and over HTTP."""
    if isinstance(exc, ConfigError):
        return f"The config is not valid: {exc}"
    return f"Nothing was pushed: {exc}"


@dataclass(frozen=True)
class Actor:
    """Who pushes, and from where: recorded with the version and in the audit."""

    name: str
    via: str = "command"  # or "http"
    api_key_id: int | None = None
    client_ip: str = ""
    forwarded_for: str = ""

    @classmethod
    def local(cls) -> Actor:
        """Whoever runs manage.py on this machine."""
        try:
            user = getpass.getuser()
        except Exception:  # no name for this uid (a container): say the uid
            import os

            user = f"uid {os.getuid()}"
        return cls(name=f"{user}@{socket.gethostname()}"[:200], via="command")


@dataclass
class PlanLine:
    sign: str  # + added, ~ changed, - removed
    name: str
    detail: str = ""

    def __str__(self) -> str:
        return f"  {self.sign} {self.name}{': ' + self.detail if self.detail else ''}"


@dataclass
class InFlight:
    """What a push that changes a campaign's flow does with the users in the middle of it."""

    on_change: str
    old_version: int | None  # the version whose flow they ran until now, if stored
    continued: int = 0  # replay cleanly: go on with the new flow
    restarted: int = 0
    kept_old: int = 0
    ended: int = 0

    @property
    def total(self) -> int:
        return self.continued + self.restarted + self.kept_old + self.ended

    def describe(self) -> str:
        old = f"version {self.old_version}" if self.old_version else "the old version"
        return (
            f"{self.total} user(s) in flight, on_change={self.on_change!r}: "
            f"{self.continued} continue on the new flow, {self.restarted} restart from the top, "
            f"{self.kept_old} stay on {old}, {self.ended} end"
        )

    def as_json(self) -> dict:
        return {
            "on_change": self.on_change,
            "continue": self.continued,
            "restart": self.restarted,
            "keep_old": self.kept_old,
            "end": self.ended,
        }


SECTIONS = ("Email provider", "Templates", "Transactions", "Segments", "Campaigns", "Files")


@dataclass
class PushPlan:
    location: str
    dry_run: bool
    sections: dict[str, list[PlanLine]] = field(default_factory=dict)
    rollback_to: int | None = None  # the version a rollback applies again
    version: int | None = None  # the version live after this push (once it has changes)
    git_commit: str | None = None
    git_dirty: bool | None = None
    warnings: list[str] = field(default_factory=list)  # `file:line: ...`, shown, not refused
    # Per campaign whose flow changed: what becomes of its users in flight.
    in_flight: dict[str, InFlight] = field(default_factory=dict)

    def add(self, section: str, sign: str, name: str, detail: str = "") -> PlanLine:
        line = PlanLine(sign, name, detail)
        self.sections.setdefault(section, []).append(line)
        return line

    def find(self, section: str, name: str) -> PlanLine | None:
        return next((line for line in self.sections.get(section, []) if line.name == name), None)

    @property
    def has_changes(self) -> bool:
        return any(self.sections.values())

    @property
    def subject(self) -> str:
        if self.rollback_to is not None:
            return f"version {self.rollback_to} ({self.location})"
        return self.location

    def render(self) -> str:
        if not self.has_changes:
            return f"Nothing to change: what is stored already matches {self.subject}."
        lines = [
            ("Plan for rolling back to " if self.rollback_to is not None else "Plan for ")
            + self.subject
            + (" (dry run: nothing was changed)" if self.dry_run else "")
        ]
        for section in SECTIONS:
            if self.sections.get(section):
                lines.append(section)
                lines.extend(str(line) for line in self.sections[section])
        return "\n".join(lines)

    def outcome(self) -> str:
        """The line after the plan: which version is live now."""
        if self.dry_run or not self.has_changes or self.version is None:
            return ""
        origin = ""
        if self.git_commit:
            dirty = ", with changes not committed" if self.git_dirty else ""
            origin = f" (commit {self.git_commit[:12]}{dirty})"
        if self.rollback_to is not None:
            return f"Rolled back. Version {self.version} is live again{origin}."
        return f"Pushed. Version {self.version} is live{origin}."

    def as_json(self) -> dict:
        return {
            "plan": self.render(),
            "outcome": self.outcome(),
            "changed": self.has_changes,
            "dry_run": self.dry_run,
            "version": self.version,
            "rollback_to": self.rollback_to,
            "warnings": self.warnings,
            "in_flight": {name: counts.as_json() for name, counts in self.in_flight.items()},
        }


@dataclass(frozen=True)
class EvaluationProgress:
    """How far a push is in evaluating its new and changed segments, range of users by range
    (SEGFLOW_SEGMENT_CHUNK_USERS): given to a push's `progress` after each range."""

    segment: str  # the segment of the range just done
    segments_done: int
    segments: int
    ranges_done: int  # of all the segments' ranges together
    ranges: int
    entered: int  # memberships, so far
    left: int
    seconds: float  # since the evaluation began

    @property
    def seconds_left(self) -> float | None:
        """At the pace so far; None before a range is done."""
        if not self.ranges_done:
            return None
        return self.seconds / self.ranges_done * (self.ranges - self.ranges_done)


Progress = Callable[[EvaluationProgress], None]


def push(
    config: Config,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    bundle: Bundle | None = None,
    actor: Actor | None = None,
    rollback_to: ConfigVersion | None = None,
    progress: Progress | None = None,
) -> PushPlan:
    """Apply `config` (or, with dry_run, only say what applying it would do).

    `bundle` is the config's files, stored as a new version when they differ from the live
    one: by default the bundle it was loaded from, else its folder's (a config built in code,
    with no file, is applied without a version). `rollback_to` is a stored version applied
    again: no new version is made. `progress` hears how the evaluation of segments goes.
    """
    now = now or timezone.now()
    actor = actor or Actor.local()
    if rollback_to is not None:
        bundle = bundle_of(rollback_to)
    elif bundle is None:
        bundle = _bundle_of(config)
    running = config
    if bundle is not None and (
        config.bundle is None or config.bundle.fingerprint != bundle.fingerprint
    ):
        running = _check_bundle(config, bundle, dry_run)
    plan = PushPlan(
        location=config.location,
        dry_run=dry_run,
        rollback_to=rollback_to.number if rollback_to is not None else None,
        git_commit=bundle.git_commit if bundle else None,
        git_dirty=bundle.git_dirty if bundle else None,
    )
    for section, contents in (
        ("templates", config.templates),
        ("transactions", config.transactions),
    ):
        for content in contents.values():
            try:
                check_template(content, config.base_dir)
            except RenderError as exc:
                raise PushError(f"{section}.{content.name}: {exc}") from exc
    plan.warnings = _check_code(config)
    with transaction.atomic():
        live = current_version()
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
        _evaluate(config, plan, changed_segments, touched_campaigns, now, progress)
        _check_in_flight(config, plan, changed_flows, live, now)
        if bundle is not None:
            _diff_files(bundle, live, plan)
        version = None
        if plan.has_changes:
            version = rollback_to
            if version is None and bundle is not None:
                same = live is not None and live.fingerprint == bundle.fingerprint
                version = live if same else _store_version(bundle, config, actor, now)
            Push.objects.create(
                created_at=now,
                fingerprint=config.fingerprint,
                location=config.location,
                email_provider=config.email_provider.describe() if config.email_provider else {},
                plan=plan.render(),
                version=version,
                pushed_by=actor.name,
                rollback=rollback_to is not None,
            )
            plan.version = version.number if version is not None else None
            _prune_versions()
        elif live is not None:
            plan.version = live.number
        ensure_periodic_tasks()
        if dry_run:
            transaction.set_rollback(True)
        else:
            # This process runs what it pushed at once; the others load it when they next sync.
            fingerprint = bundle.fingerprint if bundle is not None else None
            if bundle is not None:
                running.version = plan.version
            transaction.on_commit(lambda: live_config.set(running, version=fingerprint))
            if not settings.SEGFLOW_TASKS_INLINE:
                # Workers start the new cursors now. Embedded, the ticker does within a second:
                # a push is a config change, and sends nothing itself.
                transaction.on_commit(lambda: enqueue("run_due_cursors"))
    return plan


def _check_code(config: Config) -> list[str]:
    """Read the flows and templates for mistakes that would show only when a user reaches them;
    refuse the config on any, before anything is applied. Returns the warnings."""
    findings = check_flows(config) + missing_templates(config)
    errors = [str(f) for f in findings if not f.warning]
    if errors:
        raise ConfigError("\n".join(errors))
    return [str(f) for f in findings if f.warning]


def _bundle_of(config: Config) -> Bundle | None:
    """The files of `config`: those it was loaded from, else its folder's as they are now."""
    if config.bundle is not None:
        return config.bundle
    if config.location.startswith("<"):  # built in code (validate_config): no files
        return None
    return bundle_from_location(config.location)


def _check_bundle(config: Config, bundle: Bundle, dry_run: bool) -> Config:
    """`config` as every process will load it: from the bundle's files. A config that needs
    more than its folder's files (see segflow.client.collect_bundle) is refused here."""
    with _cache(dry_run) as root:
        loaded = _load_here(bundle, config.location, root)
        if loaded.fingerprint != config.fingerprint:
            raise PushError(
                f"{config.location} does not load the same from what a push stores ({BUNDLED}) "
                "as from where it is: it reads something else beside it, which the workers "
                "would not have"
            )
        return loaded


BUNDLED = "the .py, .html, .htm, .txt and .css files under its folder"


def _load_here(bundle: Bundle, location: str, root: Path | None) -> Config:
    """Load a bundle made on this machine. If it fails where the file itself loads, say that
    the bundle lacks something; otherwise the file's own error, as a push always gave it."""
    try:
        return load_bundle(bundle, shown_as=str(folder_of(location)), root=root)
    except ConfigError as bundled:
        load_config(location)  # raises the error the config has wherever it is loaded
        raise ConfigError(
            f"{location} loads where it is but not from what a push stores ({BUNDLED}), as "
            f"every worker will load it: {bundled}"
        ) from bundled


def bundle_of(version: ConfigVersion) -> Bundle:
    """The files of a stored version."""
    return Bundle(
        entry=version.entry,
        files=version.files,
        location=version.location,
        git_commit=version.git_commit or None,
        git_dirty=version.git_dirty,
    )


def current_version() -> ConfigVersion | None:
    """The version every process runs: the last push's (None before the first versioned push)."""
    latest = Push.objects.order_by("-id").select_related("version").first()
    return latest.version if latest is not None else None


def _store_version(bundle: Bundle, config: Config, actor: Actor, now: datetime) -> ConfigVersion:
    check_size(bundle)
    numbers = [
        ConfigVersion.objects.aggregate(n=Max("number"))["n"],
        PushAttempt.objects.aggregate(n=Max("version_number"))["n"],
    ]
    try:
        with transaction.atomic():
            return ConfigVersion.objects.create(
                number=max(n or 0 for n in numbers) + 1,
                fingerprint=bundle.fingerprint,
                config_fingerprint=config.fingerprint,
                location=bundle.location[:1000],
                entry=bundle.entry,
                files=bundle.files,
                size=bundle.size,
                git_commit=bundle.git_commit or "",
                git_dirty=bundle.git_dirty,
                pushed_by=actor.name,
                created_at=now,
            )
    except IntegrityError as exc:
        raise PushError("another push was applied at the same moment; push again") from exc


def _prune_versions() -> None:
    """Keep the SEGFLOW_CONFIG_VERSIONS_KEPT versions applied last (the live one always)."""
    kept: list[int] = []
    wanted = max(1, settings.SEGFLOW_CONFIG_VERSIONS_KEPT)
    pushes = Push.objects.filter(version__isnull=False).order_by("-id")
    for version_id in pushes.values_list("version_id", flat=True).iterator(chunk_size=200):
        if version_id not in kept:
            kept.append(version_id)
            if len(kept) >= wanted:
                break
    # The old flows users were left on (on_change="keep_old") stay until those users finish.
    pinned = (
        Cursor.objects.filter(status=Cursor.Status.ACTIVE, pinned_version__isnull=False)
        .values_list("pinned_version", flat=True)
        .distinct()
    )
    ConfigVersion.objects.exclude(pk__in=kept).exclude(number__in=list(pinned)).delete()


def _diff_files(bundle: Bundle, live: ConfigVersion | None, plan: PushPlan) -> None:
    """The files that differ from the live version's."""
    if live is not None and live.fingerprint == bundle.fingerprint:
        return
    before = live.files if live is not None else {}
    for name in sorted(set(before) | set(bundle.files)):
        if name not in before:
            plan.add("Files", "+", name)
        elif name not in bundle.files:
            plan.add("Files", "-", name)
        elif before[name] != bundle.files[name]:
            plan.add("Files", "~", name)
    if live is not None and live.entry != bundle.entry and not plan.sections.get("Files"):
        plan.add("Files", "~", bundle.entry, "now the config module")


# ---------------------------------------------------------------------------------------------
# The three ways in: a config on this machine, a bundle sent over HTTP, a stored version.


def push_location(
    location: str,
    *,
    dry_run: bool = False,
    actor: Actor | None = None,
    progress: Progress | None = None,
) -> PushPlan:
    """Push the config at `location` on this machine (`manage.py segflow_push`)."""
    actor = actor or Actor.local()
    audit = Audit(actor, "push", dry_run, location=location)

    def run() -> PushPlan:
        bundle = bundle_from_location(location)
        audit.saw(bundle)
        with _cache(dry_run) as root:
            config = _load_here(bundle, location, root)
            return push(config, dry_run=dry_run, bundle=bundle, actor=actor, progress=progress)

    return audit.run(run)


def push_bundle(bundle: Bundle, *, dry_run: bool = False, actor: Actor) -> PushPlan:
    """Push a bundle sent over HTTP: validated, planned and applied as a local push is."""
    audit = Audit(actor, "push", dry_run, location=bundle.location)
    audit.saw(bundle)

    def run() -> PushPlan:
        with _cache(dry_run) as root:
            config = load_bundle(bundle, root=root)
            return push(config, dry_run=dry_run, bundle=bundle, actor=actor)

    return audit.run(run)


def rollback(
    to: int | None = None,
    *,
    dry_run: bool = False,
    actor: Actor | None = None,
    progress: Progress | None = None,
) -> PushPlan:
    """Apply again a stored version: `to`, or else the one live before the current one."""
    actor = actor or Actor.local()
    audit = Audit(actor, "rollback", dry_run)

    def run() -> PushPlan:
        version = _rollback_target(to)
        bundle = bundle_of(version)
        audit.saw(bundle)
        with _cache(dry_run) as root:
            config = load_bundle(bundle, root=root)
            return push(
                config, dry_run=dry_run, actor=actor, rollback_to=version, progress=progress
            )

    return audit.run(run)


def _rollback_target(to: int | None) -> ConfigVersion:
    live = current_version()
    kept = ", ".join(
        str(n) for n in ConfigVersion.objects.order_by("number").values_list("number", flat=True)
    )
    if to is not None:
        version = ConfigVersion.objects.filter(number=to).first()
        if version is None:
            raise PushError(f"there is no version {to} (kept: {kept or 'none'})")
        return version
    if live is None:
        raise PushError("there is no pushed version to roll back from")
    before = (
        Push.objects.filter(version__isnull=False)
        .exclude(version=live)
        .order_by("-id")
        .select_related("version")
        .first()
    )
    if before is None:
        raise PushError(
            f"version {live.number} is the only version applied that is still kept "
            f"(kept: {kept}); give --to N"
        )
    return before.version


@contextmanager
def _cache(dry_run: bool) -> Iterator[Path | None]:
    """Where a bundle's files are written to be loaded: the cache (None), or for a dry run a
    folder thrown away after it."""
    if not dry_run:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="segflow-dry-run-") as folder:
        yield Path(folder)


class Audit:
    """One attempt, recorded whatever comes of it."""

    def __init__(self, actor: Actor, action: str, dry_run: bool, *, location: str = "") -> None:
        self.actor, self.action, self.dry_run = actor, action, dry_run
        self.location = location
        self.bundle: Bundle | None = None

    def saw(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.location = self.location or bundle.location

    def run(self, work: Callable[[], PushPlan]) -> PushPlan:
        try:
            plan = work()
        except (ConfigError, PushError) as exc:
            self.record("failed", failure_message(exc))
            raise
        if self.dry_run:
            self.record("dry run", plan.render())
        else:
            result = "applied" if plan.has_changes else "unchanged"
            self.record(result, plan.render(), plan.version)
        return plan

    def record(self, result: str, message: str, version: int | None = None) -> None:
        record_attempt(
            self.actor,
            action=self.action,
            dry_run=self.dry_run,
            result=result,
            message=message,
            location=self.location,
            bundle=self.bundle,
            version_number=version,
        )


def record_attempt(
    actor: Actor,
    *,
    action: str,
    dry_run: bool,
    result: str,
    message: str = "",
    location: str = "",
    bundle: Bundle | None = None,
    version_number: int | None = None,
) -> PushAttempt:
    """Audit one push or rollback (refused, failed, planned or applied)."""
    return PushAttempt.objects.create(
        via=actor.via,
        actor=actor.name[:200],
        api_key_id=actor.api_key_id,
        client_ip=actor.client_ip[:64],
        forwarded_for=actor.forwarded_for[:500],
        action=action,
        dry_run=dry_run,
        location=(location or (bundle.location if bundle else ""))[:1000],
        fingerprint=bundle.fingerprint if bundle else "",
        git_commit=(bundle.git_commit or "") if bundle else "",
        git_dirty=bundle.git_dirty if bundle else None,
        result=result,
        message=message,
        version_number=version_number,
    )


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
            # What the table does not keep (a send window) shows as the settings.
            plan.add("Campaigns", "~", name, f"{', '.join(what) or 'settings'} changed")
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
    progress: Progress | None = None,
) -> None:
    campaign_changes: dict[str, audience.AudienceChange] = {}
    tracker = (
        _Tracker(progress, len(changed_segments))
        if progress is not None and changed_segments
        else None
    )
    for row in changed_segments:
        on_range = tracker.on_range(row.name) if tracker is not None else None
        count, changes = refresh_segment(row, config.segments[row.name], now, on_range=on_range)
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


class _Tracker:
    """Counts the ranges done across all the segments a push evaluates, for its `progress`."""

    def __init__(self, progress: Progress, segments_count: int) -> None:
        self.progress = progress
        self.segments = segments_count
        # Every segment is evaluated over the same ranges: the push holds its transaction.
        self.ranges_each = len(segments.user_id_ranges())
        self.started = time.monotonic()
        self.segments_done = self.ranges_done = self.entered = self.left = 0

    def on_range(self, name: str) -> Callable[[segments.IdRange, segments.RefreshCount], None]:
        done_here = 0

        def report(_: segments.IdRange, count: segments.RefreshCount) -> None:
            nonlocal done_here
            done_here += 1
            self.ranges_done += 1
            self.entered += count.entered
            self.left += count.left
            if done_here == self.ranges_each:
                self.segments_done += 1
            self.progress(
                EvaluationProgress(
                    segment=name,
                    segments_done=self.segments_done,
                    segments=self.segments,
                    ranges_done=self.ranges_done,
                    ranges=self.ranges_each * self.segments,
                    entered=self.entered,
                    left=self.left,
                    seconds=time.monotonic() - self.started,
                )
            )

        return report


def _add_change(into: dict, name: str, change: audience.AudienceChange) -> None:
    before = into.get(name, audience.AudienceChange(0, 0))
    into[name] = audience.AudienceChange(
        before.entered + change.entered, before.exited + change.exited
    )


def _check_in_flight(
    config: Config,
    plan: PushPlan,
    changed_flows: list[Campaign],
    live: ConfigVersion | None,
    now: datetime,
) -> None:
    """Replay the users in a changed flow on the new code. Those it replays go on with it; the
    others, as the campaign's `on_change` says: end, restart from the top, or keep the old flow
    (the version live until now) until they finish. Users already left on an older version by
    an earlier push keep theirs."""
    old_number = live.number if live is not None else None
    for row in changed_flows:
        definition = config.campaigns[row.name]
        counts = InFlight(on_change=definition.on_change, old_version=old_number)
        on_live = Q(pinned_version__isnull=True)
        if old_number is not None:
            on_live |= Q(pinned_version=old_number)
        active = Cursor.objects.filter(
            on_live, campaign=row, status=Cursor.Status.ACTIVE, step_count__gt=0
        )
        cursors = active.select_related("campaign").prefetch_related("steps")
        for cursor in cursors.iterator(chunk_size=500):
            reason = runner.replay_check(cursor, definition)
            if reason is None:
                counts.continued += 1
                if cursor.pinned_version is not None:
                    cursor.pinned_version = None
                    cursor.save(update_fields=["pinned_version"])
            elif definition.on_change == "keep_old" and old_number is not None:
                counts.kept_old += 1
                cursor.pinned_version = old_number
                cursor.save(update_fields=["pinned_version"])
            elif definition.on_change == "restart":
                counts.restarted += 1
                _restart(cursor, reason, now)
            else:
                counts.ended += 1
                if definition.on_change == "keep_old":
                    reason += "; the old flow was not stored as a version, so it cannot go on"
                _end_diverged(cursor, Cursor.Status.DIVERGED, reason, now)
        plan.in_flight[row.name] = counts
        plan.find("Campaigns", row.name).detail += f"; {counts.describe()}"


def _end_diverged(cursor: Cursor, status: str, reason: str, now: datetime) -> None:
    runner.end_cursor(cursor, status, reason, now)
    cursor.updated_at = now
    cursor.save(
        update_fields=[
            "status",
            "due_at",
            "ended_at",
            "end_reason",
            "error",
            "entry_key",
            "updated_at",
        ]
    )


def _restart(cursor: Cursor, reason: str, now: datetime) -> Cursor:
    """End the cursor and give its user a new one, due now, at the top of the new flow: a new
    cursor has its own emails, so the flow sends again what it sends (docs/config.md)."""
    cursor.entry_key = None  # the new cursor holds the user's place in the campaign
    _end_diverged(cursor, Cursor.Status.RESTARTED, f"{reason}; restarted from the top", now)
    return Cursor.objects.create(
        campaign=cursor.campaign,
        user_id=cursor.user_id,
        status=Cursor.Status.ACTIVE,
        entry_key=cursor.user_id,
        step_count=0,
        due_at=now,
        created_at=now,
        updated_at=now,
    )
