"""The kinds of step a flow can yield, each declared in one place.

A kind of step is a `Step` subclass registered with `@step_kind`. It says how it is built (the
`rt` method that makes it, on `Runtime`), how it is recorded (`to_record`), whether a step
yielded on replay is the one recorded (`replays_as`), what the flow gets back on replay
(`result_from_record`) and how it is performed (`perform`, through the `StepPerformer` the runner
gives it). A new kind of step is one class here and one method on `Runtime`.

Plain Python with no Django inside: performing goes through the performer's methods.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol


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


class StepPerformer(Protocol):
    """What a step may do when it is performed; the runner provides it for one cursor's step."""

    now: datetime

    def send_email(self, template: str) -> SendEmailResult | NotYet: ...


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
class Patched(Step):
    """`if (yield rt.patched("id")):` — True for a user who reaches this point while the code
    that has it runs, False on replay of steps recorded before it was pushed.

    Performed live it is recorded (so it replays True). On replay a recorded step in its place
    that is not this patch means the user went past this point before the patch: the flow gets
    False and the same record is matched against the flow's next step (`absent_result`)."""

    kind: ClassVar[str] = "patched"
    patch_id: str

    # What the flow gets on replay where the history has no record of this step.
    absent_result: ClassVar[object] = False

    def describe(self) -> str:
        return f"patched({self.patch_id!r})"

    def result_from_record(self, recorded: Any) -> bool:
        return bool(recorded)

    def perform(self, performer: StepPerformer) -> StepOutcome:
        return StepOutcome(result=True, recorded_result=True)


class Runtime:
    """The `rt` a flow receives: it builds steps for the flow to yield."""

    def patched(self, patch_id: str) -> Patched:
        if not isinstance(patch_id, str) or not patch_id:
            raise ValueError(f"rt.patched needs a patch id, got {patch_id!r}")
        return Patched(patch_id=patch_id)

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
