"""The kinds of step a flow can yield, each declared in one place.

A kind of step is a `Step` subclass registered with `@step_kind`. It says how it is built (the
`rt` method that makes it, on `Runtime`), how it is recorded (`to_record`), whether a step
yielded on replay is the one recorded (`replays_as`), what the flow gets back on replay
(`result_from_record`) and how it is performed (`perform`, through the `StepPerformer` the runner
gives it). A new kind of step is one class here and one method on `Runtime`.

Plain Python with no Django inside: performing goes through the performer's methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from segflow.attributes import AttributeView


@dataclass(frozen=True)
class StepOutcome:
    """What performing a step gave: the flow's result, what to record, and when to go on.

    A step that could not be performed yet (`NotYet`) is not recorded: the cursor pauses until
    `due_at` and the step is yielded and performed again then, as if for the first time."""

    result: object
    recorded_result: object
    due_at: datetime | None = None  # set when the cursor should pause until then
    recorded: bool = True


@dataclass(frozen=True)
class NotYet:
    """A performer's answer when a step cannot be performed yet: try it again at `retry_at`."""

    retry_at: datetime
    reason: str


class StepError(Exception):
    """A step could not be performed; the cursor fails with this message."""


@dataclass(frozen=True)
class SendEmailResult:
    """What `yield rt.send_email(...)` gives back to the flow."""

    success: bool
    status: str = ""
    reason: str = ""
    outbox_id: int | None = None

    def __bool__(self) -> bool:
        return self.success


@dataclass(frozen=True)
class FlowEvent:
    """What `yield rt.wait_for_event(...)` gives back: the event that ended the wait."""

    id: int
    name: str
    attributes: AttributeView
    timestamp: datetime

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "attributes": self.attributes.to_dict(),
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FlowEvent:
        return cls(
            id=record["id"],
            name=record["name"],
            attributes=AttributeView(record.get("attributes") or {}),
            timestamp=datetime.fromisoformat(record["timestamp"]),
        )


class StepPerformer(Protocol):
    """What a step may do when it is performed; the runner provides it for one cursor's step."""

    now: datetime

    def send_email(self, template: str) -> SendEmailResult | NotYet: ...

    def event_mark(self) -> dict[str, Any]:
        """Where the user's events stand now, so that `find_event` can tell the events
        processed after this moment from those processed before it."""
        ...

    def find_event(
        self,
        name: str,
        mark: dict[str, Any],
        until: datetime,
        where: Callable[[AttributeView], Any] | None,
    ) -> FlowEvent | None:
        """The first event `name` of the user processed after `mark` and by `until` for which
        `where` (given its attributes) is true."""
        ...


@dataclass(frozen=True)
class Step:
    kind: ClassVar[str] = ""

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    def replays_as(self, recorded_kind: str, recorded_args: dict[str, Any]) -> bool:
        """Whether this step, yielded on replay, is the same step as the one recorded."""
        return recorded_kind == self.kind and recorded_args == self.to_record()

    def result_from_record(self, recorded: Any) -> Any:
        return recorded

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_record().items())
        return f"{self.kind}({args})"

    def perform(self, performer: StepPerformer) -> StepOutcome:
        raise NotImplementedError

    def next_due(self, performed_at: datetime) -> datetime:
        """When the step after this one came due, this one having been performed at
        `performed_at`: at once, unless the step pauses the flow."""
        return performed_at

    def is_pending(self, recorded: Any) -> bool:
        """Whether a recorded step has no result yet: the flow waits at it, and the runner
        finishes it (`resume`) before the flow goes on."""
        return False

    def resumed_at(self, recorded: Any) -> datetime | None:
        """When a step that was pending got its result (the step after it came due then)."""
        return None

    def resume(self, performer: StepPerformer, recorded: Any, began_at: datetime) -> StepOutcome:
        """Finish a pending step begun at `began_at`: its result, to record in place of
        `recorded`, or (`recorded=False`) when to look again."""
        raise NotImplementedError


STEP_KINDS: dict[str, type[Step]] = {}


def step_kind(cls: type[Step]) -> type[Step]:
    """Register a kind of step under its `kind`, so recorded steps of it can be read back."""
    STEP_KINDS[cls.kind] = cls
    return cls


def describe_record(kind: str, args: dict[str, Any]) -> str:
    """A recorded step as a person reads it: `send_email('welcome')`."""
    step_class = STEP_KINDS.get(kind)
    if step_class is None:
        return f"{kind}({args!r})"
    try:
        return step_class(**args).describe()
    except TypeError:
        return f"{kind}({args!r})"


@step_kind
@dataclass(frozen=True)
class SendEmail(Step):
    kind: ClassVar[str] = "send_email"
    template: str

    def result_from_record(self, recorded: Any) -> SendEmailResult:
        if not recorded:
            return SendEmailResult(success=False, reason="no result was recorded")
        return SendEmailResult(**recorded)

    def describe(self) -> str:
        return f"send_email({self.template!r})"

    def perform(self, performer: StepPerformer) -> StepOutcome:
        result = performer.send_email(self.template)
        if isinstance(result, NotYet):
            return StepOutcome(
                result=None, recorded_result=None, due_at=result.retry_at, recorded=False
            )
        return StepOutcome(result=result, recorded_result=asdict(result))


@step_kind
@dataclass(frozen=True)
class Wait(Step):
    kind: ClassVar[str] = "wait"
    seconds: float

    def replays_as(self, recorded_kind: str, recorded_args: dict[str, Any]) -> bool:
        # A changed duration is the same step: a user already waiting keeps the wait they began.
        return recorded_kind == self.kind

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def describe(self) -> str:
        return f"wait({self.duration})"

    def perform(self, performer: StepPerformer) -> StepOutcome:
        return StepOutcome(result=None, recorded_result=None, due_at=self.next_due(performer.now))

    def next_due(self, performed_at: datetime) -> datetime:
        return performed_at + self.duration


@step_kind
@dataclass(frozen=True)
class WaitForEvent(Step):
    """Wait until the user does something, or until a timeout.

    Performing it only begins the wait: its record says where the user's events stood then
    (`{"waiting": mark}`), and the cursor is due at the timeout, or sooner when an event of that
    name is processed for the user (`campaigns.waits`). When the cursor runs again, the runner
    resumes it: the first matching event processed since the wait began, or None once the
    timeout passed, replaces the mark in the record (`{"event": ...}`), so a replay gives the
    flow the same answer. `where` is code: never recorded, it is asked when the cursor runs."""

    kind: ClassVar[str] = "wait_for_event"
    event: str
    seconds: float
    where: Callable[[AttributeView], Any] | None = field(default=None, compare=False)

    def to_record(self) -> dict[str, Any]:
        return {"event": self.event, "seconds": self.seconds}

    def replays_as(self, recorded_kind: str, recorded_args: dict[str, Any]) -> bool:
        # As with rt.wait, a changed timeout is the same step; another event is not.
        return recorded_kind == self.kind and recorded_args.get("event") == self.event

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def describe(self) -> str:
        return f"wait_for_event({self.event!r}, timeout={self.duration})"

    def result_from_record(self, recorded: Any) -> FlowEvent | None:
        event = (recorded or {}).get("event")
        return FlowEvent.from_record(event) if event else None

    def is_pending(self, recorded: Any) -> bool:
        return isinstance(recorded, dict) and "waiting" in recorded

    def resumed_at(self, recorded: Any) -> datetime | None:
        when = recorded.get("resumed_at") if isinstance(recorded, dict) else None
        return datetime.fromisoformat(when) if when else None

    def perform(self, performer: StepPerformer) -> StepOutcome:
        return StepOutcome(
            result=None,
            recorded_result={"waiting": performer.event_mark()},
            due_at=performer.now + self.duration,
        )

    def resume(self, performer: StepPerformer, recorded: Any, began_at: datetime) -> StepOutcome:
        deadline = began_at + self.duration
        resumed_at = performer.now.isoformat()
        found = performer.find_event(self.event, recorded["waiting"], deadline, self.where)
        if found is not None:
            return StepOutcome(
                result=found,
                recorded_result={"event": found.to_record(), "resumed_at": resumed_at},
            )
        if performer.now >= deadline:
            return StepOutcome(
                result=None, recorded_result={"event": None, "resumed_at": resumed_at}
            )
        # Woken by an event `where` turned down: wait on until the timeout.
        return StepOutcome(result=None, recorded_result=recorded, due_at=deadline, recorded=False)


class Runtime:
    """The `rt` a flow receives: it builds steps for the flow to yield."""

    def send_email(self, template_id: str) -> SendEmail:
        if not isinstance(template_id, str) or not template_id:
            raise ValueError(f"rt.send_email needs a template id, got {template_id!r}")
        return SendEmail(template=template_id)

    def wait(
        self,
        delta: timedelta | None = None,
        *,
        weeks: float = 0,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
    ) -> Wait:
        duration = delta if delta is not None else timedelta()
        duration += timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        if duration < timedelta():
            raise ValueError(f"rt.wait needs a duration of zero or more, got {duration}")
        return Wait(seconds=duration.total_seconds())

    def wait_for_event(
        self,
        name: str,
        timeout: timedelta | None = None,
        *,
        where: Callable[[AttributeView], Any] | None = None,
        weeks: float = 0,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
    ) -> WaitForEvent:
        if not isinstance(name, str) or not name:
            raise ValueError(f"rt.wait_for_event needs an event name, got {name!r}")
        if where is not None and not callable(where):
            raise ValueError(f"rt.wait_for_event: where= must be a function, got {where!r}")
        duration = timeout if timeout is not None else timedelta()
        duration += timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        if duration <= timedelta():
            raise ValueError(f"rt.wait_for_event needs a timeout of more than zero, got {duration}")
        return WaitForEvent(event=name, seconds=duration.total_seconds(), where=where)
