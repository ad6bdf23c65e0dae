"""The flow engine: runs a campaign's generator function, resumably, in plain Python.

A flow is a generator `flow(ctx, rt)` that yields steps. Generators cannot be stored, so a cursor
stores what happened instead: each step the flow yielded, its result, and the user's attributes
the flow saw when it yielded it. To resume, `FlowRun` re-creates the generator and replays it over
that history, feeding back the recorded attributes and results, then carries on live from there.

Nothing here touches Django or the database; `campaigns.services` does the performing and storing.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

# ---------------------------------------------------------------------------------------------
# Steps: what a flow yields. A new kind of step is a subclass registered in STEP_KINDS, plus a
# performer in campaigns.services.


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


STEP_KINDS: dict[str, type[Step]] = {SendEmail.kind: SendEmail, Wait.kind: Wait}


@dataclass(frozen=True)
class SendEmailResult:
    """What `yield rt.send_email(...)` gives back to the flow."""

    success: bool
    status: str = ""
    reason: str = ""
    outbox_id: int | None = None

    def __bool__(self) -> bool:
        return self.success


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


# ---------------------------------------------------------------------------------------------
# What the flow sees.


class FlowUser:
    """`ctx.user`: the user's attributes, by attribute or by key; missing ones read as None.

    Assignments change what the flow sees at once and, once the step is stored, the user itself.
    """

    __slots__ = ("_id", "_attributes", "_writes", "_live")

    def __init__(self, user_id: str, attributes: dict[str, Any]) -> None:
        object.__setattr__(self, "_id", user_id)
        object.__setattr__(self, "_attributes", dict(attributes))
        object.__setattr__(self, "_writes", {})
        object.__setattr__(self, "_live", False)

    @property
    def id(self) -> str:
        return self._id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._attributes.get(name)

    def __getitem__(self, key: str) -> Any:
        return self._attributes.get(key)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "id":
            raise AttributeError("ctx.user.id is the user's id and cannot be changed")
        self._attributes[key] = value
        if self._live:
            self._writes[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self._attributes

    def get(self, key: str, default: Any = None) -> Any:
        return self._attributes.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._attributes)

    def __repr__(self) -> str:
        return f"<user {self._id!r} {self._attributes!r}>"


@dataclass
class FlowContext:
    """The `ctx` a flow receives."""

    user: FlowUser
    campaign: str


# ---------------------------------------------------------------------------------------------
# Running and replaying.


@dataclass(frozen=True)
class RecordedStep:
    kind: str
    args: dict[str, Any]
    result: Any
    user_snapshot: dict[str, Any]


class FlowDiverged(Exception):
    """The flow's code no longer yields the steps this cursor recorded."""


class FlowFailed(Exception):
    """The flow raised, or yielded something that is not a step."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details or message


@dataclass
class NextStep:
    step: Step | None  # None: the flow has finished
    user_snapshot: dict[str, Any] = field(default_factory=dict)


class FlowRun:
    """One resumption of a flow for one user: replays the history, then runs live."""

    def __init__(
        self,
        flow: Callable[..., Iterator[Any]],
        *,
        user_id: str,
        attributes: dict[str, Any],
        history: list[RecordedStep],
        campaign: str = "",
    ) -> None:
        self.user = FlowUser(user_id, {})
        self.context = FlowContext(user=self.user, campaign=campaign)
        self._finished = False
        self._to_send: Any = None
        try:
            self._generator = flow(self.context, Runtime())
        except Exception as exc:
            raise FlowFailed(
                f"the flow raised {exc!r} when called", traceback.format_exc()
            ) from exc
        self._replay(history)
        object.__setattr__(self.user, "_attributes", dict(attributes))
        object.__setattr__(self.user, "_live", True)

    @property
    def pending_writes(self) -> dict[str, Any]:
        """Attributes the flow assigned while running live, to be stored on the user."""
        return dict(self.user._writes)

    def _replay(self, history: list[RecordedStep]) -> None:
        for index, recorded in enumerate(history):
            object.__setattr__(self.user, "_attributes", dict(recorded.user_snapshot))
            step = self._advance()
            if step is None:
                raise FlowDiverged(
                    f"step {index + 1}: the flow now ends here, but this user's step "
                    f"{index + 1} was {_describe_record(recorded)}"
                )
            if not step.replays_as(recorded.kind, recorded.args):
                raise FlowDiverged(
                    f"step {index + 1}: the flow now yields {step.describe()}, "
                    f"but this user's step {index + 1} was {_describe_record(recorded)}"
                )
            self._to_send = step.result_from_record(recorded.result)

    def next_step(self) -> NextStep:
        """Run the flow on to its next step, with the user's current attributes."""
        snapshot = self.user.to_dict()
        return NextStep(step=self._advance(), user_snapshot=snapshot)

    def step_done(self, step: Step, result: Any) -> None:
        """Give the flow the result of the step it yielded last."""
        self._to_send = result

    def _advance(self) -> Step | None:
        if self._finished:
            return None
        try:
            yielded = self._generator.send(self._to_send)
        except StopIteration:
            self._finished = True
            return None
        except Exception as exc:
            self._finished = True
            raise FlowFailed(f"the flow raised {exc!r}", traceback.format_exc()) from exc
        finally:
            self._to_send = None
        if not isinstance(yielded, Step):
            self._finished = True
            raise FlowFailed(
                f"the flow yielded {yielded!r}; a flow must yield steps such as "
                "rt.send_email('template') or rt.wait(days=1)"
            )
        return yielded


def _describe_record(recorded: RecordedStep) -> str:
    step_class = STEP_KINDS.get(recorded.kind)
    if step_class is None:
        return f"{recorded.kind}({recorded.args!r})"
    try:
        return step_class(**recorded.args).describe()
    except TypeError:
        return f"{recorded.kind}({recorded.args!r})"
