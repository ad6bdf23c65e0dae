"""Testing flows in plain pytest: a user run through a campaign by the real engine, on a fake clock.

    from segflow.testing import simulate

    run = simulate("segflow_config.py", "onboarding", user={"email": "a@b.c"})
    assert run.sent == ["welcome"]
    run.advance(days=1)

A simulation is the production pipeline (push, users and events stored, segments evaluated,
campaigns entered, cursors claimed, replayed and performed, emails rendered and delivered) in a
database of its own: an in-memory SQLite database, copied from a migrated template in a few
milliseconds, that no other simulation and none of the caller's tests see. Time is frozen at the
simulation's clock while it works, and moves only with `advance`, which runs the schedule's tick
at every moment work comes due, as beat (or the embedded ticker) would. See docs/testing.md.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import importlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segflow.config import Config

__all__ = ["Email", "Simulation", "SimulationError", "simulate"]

# Monday 5 January 2026, 09:00 UTC: a fixed start makes every run of a test see the same days and
# hours (send windows, weekdays), whatever day the test runs on.
DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DEFAULT_USER_ID = "user-1"
# More ticks than this in one `advance` is a flow or a config that never stops asking for one.
MAX_TICKS_PER_ADVANCE = 20_000

# What every simulation runs with, whatever the caller's settings: work in this process, failures
# raised rather than left to a sweep, and email delivered to Django's in-memory backend, never to
# a provider.
SIMULATION_SETTINGS: dict[str, Any] = {
    "SEGFLOW_TASKS_INLINE": True,
    "SEGFLOW_INLINE_TASKS_RAISE": True,
    "SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND": True,
    "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
}


class SimulationError(Exception):
    """A simulation cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Email:
    """One email to the simulated user, rendered by the real templates."""

    template: str  # the template's name, or the transaction's for a transactional email
    subject: str
    html: str
    text: str
    to: str
    status: str  # queued, sent, skipped, failed ... (delivery.models.OutboxEmail.Status)
    reason: str  # why it was skipped or failed
    at: datetime  # simulated time it was written
    campaign: str = ""
    transaction: str = ""


def simulate(
    config: str | os.PathLike | Config,
    campaign: str,
    *,
    user: Mapping[str, Any] | None = None,
    user_id: str = DEFAULT_USER_ID,
    start: datetime | None = None,
) -> Simulation:
    """Push `config` (a config file's path, a dotted module, or a loaded `Config`) into a fresh
    database, create the user with `user`'s attributes at `start` (default: DEFAULT_START) and
    let the pipeline run: if the user is in the campaign's audience, its flow runs to its first
    wait. Returns the `Simulation` to move on and inspect."""
    _ensure_django()
    from segflow.config import Config, load_config

    loaded = config if isinstance(config, Config) else load_config(str(config))
    if campaign not in loaded.campaigns:
        known = ", ".join(repr(name) for name in sorted(loaded.campaigns)) or "none"
        raise SimulationError(
            f"no campaign {campaign!r} in {loaded.location} (its campaigns: {known})"
        )
    when = start or DEFAULT_START
    if when.tzinfo is None:
        raise SimulationError(f"start must be a timezone-aware datetime, got {when!r}")
    attributes = dict(user) if user is not None else {"email": f"{user_id}@example.com"}
    return Simulation(loaded, campaign, user_id, attributes, when)


class Simulation:
    """One user in one campaign, run by the real pipeline in a database of its own."""

    def __init__(
        self, config: Config, campaign: str, user_id: str, attributes: dict, start: datetime
    ) -> None:
        self.config = config
        self.campaign = campaign
        self.user_id = user_id
        self._now = start
        self._database = _Database.fresh()
        self._live_state: dict[str, Any] | None = None
        self._working_depth = 0
        with self._working():
            from segflow import users
            from segflow.push import push

            push(config)
            users.put_user(user_id, attributes)
            self._tick()

    # -----------------------------------------------------------------------------------------
    # Moving the simulation on.

    def advance(
        self,
        delta: timedelta | None = None,
        *,
        weeks: float = 0,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
    ) -> Simulation:
        """Let time pass, the schedule ticking at every moment something comes due on the way
        (a cursor's next step, an email's retry, a time-based segment's refresh) and at the end."""
        duration = (delta or timedelta()) + timedelta(
            weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds
        )
        if duration < timedelta():
            raise SimulationError(f"advance needs a duration of zero or more, got {duration}")
        target = self._now + duration
        with self._working():
            for _ in range(MAX_TICKS_PER_ADVANCE):
                due = self._next_due(target)
                if due is None or due > target:
                    break
                self._move_to(due)
                self._tick()
            else:
                raise SimulationError(
                    f"more than {MAX_TICKS_PER_ADVANCE} ticks before {target:%Y-%m-%d %H:%M}: "
                    "something comes due again and again"
                )
            self._move_to(target)
            self._tick()
        return self

    def set_user(self, attributes: Mapping[str, Any] | None = None, **more: Any) -> Simulation:
        """Change the user's attributes as the API's PATCH does (a None removes one); their
        segments and campaigns are evaluated again."""
        patch = {**(attributes or {}), **more}
        with self._working():
            from segflow import users

            users.patch_user(self.user_id, patch)
            self._tick()
        return self

    def emit(self, name: str, attributes: Mapping[str, Any] | None = None) -> Simulation:
        """The user does `name`: the event is stored and processed as one the API received."""
        with self._working():
            from segflow import users

            users.store_event(users.NewEvent(self.user_id, name, dict(attributes or {})))
            self._tick()
        return self

    # -----------------------------------------------------------------------------------------
    # What happened.

    @property
    def now(self) -> datetime:
        """The simulation's clock."""
        return self._now

    @property
    def sent(self) -> list[str]:
        """The template names of the campaign's emails to the user that went out, in order
        (skipped ones are in `skipped`)."""
        return [email.template for email in self.emails]

    @property
    def emails(self) -> list[Email]:
        """The campaign's emails to the user that went out, rendered, in order."""
        return [e for e in self._campaign_emails() if e.status not in _NOT_SENT]

    @property
    def skipped(self) -> list[Email]:
        """The campaign's emails that were not sent, each with its `reason`."""
        return [e for e in self._campaign_emails() if e.status in _NOT_SENT]

    @property
    def outbox(self) -> list[Email]:
        """Every email to the user: this campaign's, other campaigns' and transactional ones."""
        with self._working():
            from delivery.models import OutboxEmail

            rows = OutboxEmail.objects.filter(user_id=self.user_id).order_by("pk")
            return [_email(row) for row in rows]

    @property
    def user(self) -> dict[str, Any]:
        """The user's attributes now."""
        with self._working():
            from segflow.models import User

            row = User.objects.filter(pk=self.user_id).first()
            return dict(row.attributes or {}) if row is not None else {}

    @property
    def status(self) -> str:
        """Where the user is in the campaign: "not entered" (not in its audience yet),
        "waiting" (in the flow, paused until a time or an event), "active" (a step is due now),
        or how the flow ended: "completed", "exited", "failed", "diverged", "ended" (a cursor's
        status, whatever ways of ending segflow adds)."""
        with self._working():
            return _status(self._cursor(), self._now)

    @property
    def error(self) -> str | None:
        """Why the flow failed or diverged (with the flow's traceback when it raised)."""
        with self._working():
            cursor = self._cursor()
            if cursor is None or cursor.status not in ("failed", "diverged"):
                return None
            return "\n".join(part for part in (cursor.end_reason, cursor.error) if part)

    @property
    def steps(self) -> list[str]:
        """The steps the flow took, as the admin shows them: `send_email('welcome')`, ..."""
        with self._working():
            from campaigns.steps import describe_record

            cursor = self._cursor()
            if cursor is None:
                return []
            return [describe_record(s.kind, s.args) for s in cursor.steps.order_by("index")]

    def replays_cleanly_on(self, new: Callable[..., Iterator[Any]] | str | os.PathLike) -> bool:
        """Whether this user's history replays on a changed flow (a flow function, or a config
        file whose campaign of the same name has it), as a push checks a user in flight."""
        return self.replay_problem(new) is None

    def replay_problem(self, new: Callable[..., Iterator[Any]] | str | os.PathLike) -> str | None:
        """None if this user's history replays cleanly on `new` (see `replays_cleanly_on`),
        else what a push would say about it."""
        definition = self._definition_of(new)
        with self._working():
            from campaigns.runner import replay_check

            cursor = self._cursor()
            if cursor is None:
                return None  # no history: any flow starts afresh
            return replay_check(cursor, definition)

    def __repr__(self) -> str:
        try:
            status, error = self.status, self.error
        except Exception as exc:  # a repr must not raise (pytest shows it in failures)
            return f"<Simulation {self.campaign!r} for {self.user_id!r}: unreadable ({exc!r})>"
        shown = f"{status}: {error.splitlines()[0]}" if error else status
        return (
            f"<Simulation {self.campaign!r} for {self.user_id!r} at "
            f"{self._now:%Y-%m-%d %H:%M} UTC, {shown}, sent {self.sent!r}>"
        )

    # -----------------------------------------------------------------------------------------
    # Inside.

    @contextmanager
    def _working(self) -> Iterator[None]:
        """This simulation's database, clock, settings and live config, for the time of a call."""
        import time_machine
        from django.test.utils import override_settings

        if self._working_depth:
            yield  # already inside one of this simulation's calls
            return
        with ExitStack() as stack:
            stack.enter_context(_LOCK)
            stack.enter_context(self._database.in_use())
            self._traveller = stack.enter_context(time_machine.travel(self._now, tick=False))
            stack.enter_context(override_settings(**_settings()))
            stack.enter_context(self._live_config())
            self._working_depth += 1
            try:
                yield
            finally:
                self._working_depth -= 1

    @contextmanager
    def _live_config(self) -> Iterator[None]:
        # The process's one LiveConfig holds what it last loaded; each simulation keeps its own.
        from segflow.live_config import live_config

        saved = dict(vars(live_config))
        if self._live_state is None:
            live_config.reset()
        else:
            vars(live_config).update(self._live_state)
        try:
            yield
        finally:
            self._live_state = dict(vars(live_config))
            vars(live_config).update(saved)

    def _move_to(self, when: datetime) -> None:
        if when > self._now:
            self._traveller.move_to(when)
            self._now = when

    def _tick(self) -> None:
        from segflow.pipeline import tick

        tick(self._now)

    def _next_due(self, until: datetime) -> datetime | None:
        """The next moment after now, up to `until`, that work comes due: a cursor's step, an
        email's retry, or a refresh of a time-based segment that lets the user into the
        campaign or out of it."""
        from django.db.models import Min

        from campaigns.models import Cursor
        from delivery.models import OutboxEmail

        now = self._now
        candidates = [
            Cursor.objects.filter(status=Cursor.Status.ACTIVE, due_at__gt=now).aggregate(
                at=Min("due_at")
            )["at"],
            OutboxEmail.objects.filter(
                status=OutboxEmail.Status.QUEUED, next_attempt_at__gt=now
            ).aggregate(at=Min("next_attempt_at"))["at"],
            self._next_audience_change(until),
        ]
        due = [when for when in candidates if when is not None]
        return min(due) if due else None

    def _next_audience_change(self, until: datetime) -> datetime | None:
        """When a time-based segment of the campaign's audience first changes its answer for the
        user, up to `until`: the refresh that lets them in (or, in a dynamic campaign, out).

        Refreshing every segment every minute of a simulated month would take minutes, so the
        segments are asked (read only, as of a time) where their answer changes, halving the
        interval down to the second. A user in a static campaign cannot be let in again, and
        is not let out: nothing to look for then."""
        from segflow.live_config import live_config
        from segments.models import SegmentMembership

        definition = self.config.campaigns[self.campaign]
        if definition.behavior != "dynamic" and self._cursor() is not None:
            return None
        audience = {*definition.segments, *definition.exclude_segments}
        segments = [
            (row, d)
            for row, d in live_config.segments(live_config.sync())
            if row.name in audience and row.refresh_seconds
        ]
        if not segments:
            return None
        stored = frozenset(
            SegmentMembership.objects.filter(
                user_id=self.user_id, segment_id__in=[row.pk for row, _ in segments]
            ).values_list("segment_id", flat=True)
        )
        earliest_refresh = min(
            (row.refreshed_at or self._now) + timedelta(seconds=row.refresh_seconds)
            for row, _ in segments
        )
        if self._matching(segments, self._now) != stored:
            return max(earliest_refresh, self._now)
        if self._matching(segments, until) == stored:
            return None  # (a segment that lets a user in and out again in between is not seen)
        low, high = self._now, until  # unchanged at low, changed at high
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if self._matching(segments, middle) == stored:
                low = middle
            else:
                high = middle
        return max(high.replace(microsecond=0) + timedelta(seconds=1), earliest_refresh)

    def _matching(self, segments: list, when: datetime) -> frozenset[int]:
        """Which of `segments` the user is in as of `when` (read only; the clock is back at now
        afterwards)."""
        from segments.services import matching_segments_of

        self._traveller.move_to(when)
        try:
            matched = matching_segments_of([self.user_id], segments, when)
        finally:
            self._traveller.move_to(self._now)
        return frozenset(matched.get(self.user_id, ()))

    def _cursor(self):
        from campaigns.models import Cursor

        return (
            Cursor.objects.filter(user_id=self.user_id, campaign__name=self.campaign)
            .order_by("-pk")
            .first()
        )

    def _campaign_emails(self) -> list[Email]:
        with self._working():
            from delivery.models import OutboxEmail

            rows = OutboxEmail.objects.filter(user_id=self.user_id, campaign_name=self.campaign)
            return [_email(row) for row in rows.order_by("pk")]

    def _definition_of(self, new: Callable[..., Iterator[Any]] | str | os.PathLike):
        from segflow.config import load_config

        current = self.config.campaigns[self.campaign]
        if callable(new):
            return dataclasses.replace(current, flow=new)
        changed = load_config(str(new))
        if self.campaign not in changed.campaigns:
            known = ", ".join(repr(name) for name in sorted(changed.campaigns)) or "none"
            raise SimulationError(
                f"no campaign {self.campaign!r} in {changed.location} (its campaigns: {known})"
            )
        return changed.campaigns[self.campaign]


_NOT_SENT = ("skipped", "failed")
# One simulation works at a time: they share the process's clock and its live config.
_LOCK = threading.RLock()


def _email(row) -> Email:
    return Email(
        template=row.template_name or row.transaction_name,
        subject=row.subject,
        html=row.html,
        text=row.text,
        to=row.to_address,
        status=row.status,
        reason=row.reason,
        at=row.created_at,
        campaign=row.campaign_name,
        transaction=row.transaction_name,
    )


def _status(cursor, now: datetime) -> str:
    if cursor is None:
        return "not entered"
    if cursor.status != "active":
        return cursor.status
    if cursor.due_at is not None and cursor.due_at <= now:
        return "active"
    return "waiting"


# ---------------------------------------------------------------------------------------------
# Django, configured on the fly when the caller has no settings, and a database per simulation.


def _ensure_django() -> None:
    import django
    from django.apps import apps
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure(**_standalone_settings())
    if not apps.ready:
        django.setup()
    missing = [app for app in _APPS if not apps.is_installed(app)]
    if missing:
        raise SimulationError(
            "segflow.testing needs segflow's Django apps, and this process's settings "
            f"({os.environ.get('DJANGO_SETTINGS_MODULE') or 'configured in code'}) do not "
            f"install {', '.join(missing)}. Run flow tests in a pytest run without "
            "DJANGO_SETTINGS_MODULE (segflow configures Django itself), or with "
            "segflow_project.test_settings"
        )


_APPS = ("segflow", "segments", "campaigns", "transactions", "templates", "delivery")


def _settings() -> dict[str, Any]:
    from django.conf import settings

    overrides = dict(SIMULATION_SETTINGS)
    if not getattr(settings, "SEGFLOW_CONFIG_CACHE_DIR", ""):
        overrides["SEGFLOW_CONFIG_CACHE_DIR"] = _cache_dir()
    return overrides


_cache_path: str | None = None


def _cache_dir() -> str:
    global _cache_path
    if _cache_path is None:
        _cache_path = tempfile.mkdtemp(prefix="segflow-simulation-")
        atexit.register(shutil.rmtree, _cache_path, ignore_errors=True)
    return _cache_path


def _standalone_settings() -> dict[str, Any]:
    """Settings for a process that has none: segflow's test settings (its apps and defaults,
    email to Django's in-memory backend, pushed configs cached in a temporary folder), with an
    in-memory database that is never used: each simulation swaps in its own."""
    environment = dict(os.environ)
    try:
        module = importlib.import_module("segflow_project.test_settings")
    finally:
        # The settings read their defaults into the environment, and the project names its
        # settings module there for Celery: the caller's process keeps the environment it had.
        os.environ.clear()
        os.environ.update(environment)
    values = {name: getattr(module, name) for name in dir(module) if name.isupper()}
    values["DATABASES"] = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    return values


class _Database:
    """An in-memory SQLite database of one simulation, copied from a template migrated once per
    process, used as the `default` database while the simulation works."""

    _template: Any = None

    def __init__(self) -> None:
        self.wrapper = _private_wrapper()
        self.wrapper.connect()

    @classmethod
    def fresh(cls) -> _Database:
        with _LOCK:
            if cls._template is None:
                template = cls()
                with template.in_use():
                    from django.core.management import call_command

                    # run_syncdb: tables even for apps whose migrations a test runner turned off
                    call_command("migrate", verbosity=0, interactive=False, run_syncdb=True)
                cls._template = template
            database = cls()
            cls._template.wrapper.connection.backup(database.wrapper.connection)
            return database

    @contextmanager
    def in_use(self) -> Iterator[None]:
        from django.db import DEFAULT_DB_ALIAS, connections

        previous = connections[DEFAULT_DB_ALIAS]
        connections[DEFAULT_DB_ALIAS] = self.wrapper
        try:
            yield
        finally:
            connections[DEFAULT_DB_ALIAS] = previous


@functools.cache
def _private_database_class() -> type:
    from django.db.backends.sqlite3.base import DatabaseWrapper

    class PrivateDatabase(DatabaseWrapper):
        def ensure_connection(self) -> None:
            # This database is the simulation's own, in memory: a test runner's guard on the
            # caller's databases (pytest-django's) is not about it.
            if self.connection is None:
                self.connect()

    return PrivateDatabase


def _private_wrapper():
    from django.db.utils import ConnectionHandler

    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3"}})
    settings_dict = dict(handler.settings["default"], NAME=":memory:")
    return _private_database_class()(settings_dict, "default")
