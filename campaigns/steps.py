"""The kinds of step a flow can yield, each declared in one place.

A kind of step is a `Step` subclass registered with `@step_kind`. It says how it is built (the
`rt` method that makes it, on `Runtime`), how it is recorded (`to_record`), whether a step
yielded on replay is the one recorded (`replays_as`), what the flow gets back on replay
(`result_from_record`) and how it is performed (`perform`, through the `StepPerformer` the runner
gives it). A new kind of step is one class here and one method on `Runtime`.

Plain Python with no Django inside: performing goes through the performer's methods.
"""

from __future__ import annotations

import hashlib
import math
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
    campaign: str  # the campaign's name
    user_id: str

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


def choose_branch(weights: dict[str, float], campaign: str, user_id: str, name: str = "") -> str:
    """The branch of a split for a user: a stable hash of the campaign, the user (and the
    split's name, if it has one) placed on the weights laid end to end, in the order of the
    branches' names. The same user in the same campaign always gets the same branch, on every
    worker and every version of Python; over many users each branch gets its share."""
    text = "\x1f".join((campaign, user_id, name) if name else (campaign, user_id))
    point = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64
    total = sum(weights.values())
    reached = 0.0
    branches = sorted(weights)
    for branch in branches:
        reached += weights[branch]
        if point * total < reached:
            return branch
    return branches[-1]  # (rounding at the very end of the line)


@step_kind
@dataclass(frozen=True)
class Split(Step):
    kind: ClassVar[str] = "split"
    weights: dict[str, float]
    name: str = ""

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"weights": dict(self.weights)}
        if self.name:
            record["name"] = self.name
        return record

    def replays_as(self, recorded_kind: str, recorded_args: dict[str, Any]) -> bool:
        # New weights are the same split, as long as it has the same branches: a user keeps the
        # branch they were given, and only users who reach the split later get the new shares.
        return (
            recorded_kind == self.kind
            and set(recorded_args.get("weights") or {}) == set(self.weights)
            and recorded_args.get("name", "") == self.name
        )

    def describe(self) -> str:
        named = f", name={self.name!r}" if self.name else ""
        return f"split({dict(self.weights)!r}{named})"

    def perform(self, performer: StepPerformer) -> StepOutcome:
        branch = choose_branch(self.weights, performer.campaign, performer.user_id, self.name)
        return StepOutcome(result=branch, recorded_result=branch)


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

    def split(self, weights: dict[str, float], *, name: str = "") -> Split:
        """Put the user in one branch of `weights` (branch name -> positive weight): `yield`
        gives back the branch's name. `name` makes two splits of one flow choose independently
        of each other."""
        if not isinstance(weights, dict) or not weights:
            raise ValueError(f"rt.split needs a dict of branch names and weights, got {weights!r}")
        for branch, weight in weights.items():
            if not isinstance(branch, str) or not branch:
                raise ValueError(
                    f"rt.split: branch names must be non-empty strings, got {branch!r}"
                )
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not math.isfinite(weight)
                or weight <= 0
            ):
                raise ValueError(
                    f"rt.split: the weight of {branch!r} must be a positive number, got {weight!r}"
                )
        if not isinstance(name, str):
            raise ValueError(f"rt.split: name must be a string, got {name!r}")
        return Split(weights=dict(weights), name=name)
