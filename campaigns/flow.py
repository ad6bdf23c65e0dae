"""The flow engine: runs a campaign's generator function, resumably, in plain Python.

A flow is a generator `flow(ctx, rt)` that yields steps. Generators cannot be stored, so a cursor
stores what happened instead: each step the flow yielded, its result, and the user's attributes
the flow saw when it yielded it. To resume, `FlowRun` re-creates the generator and replays it over
that history, feeding back the recorded attributes and results, then carries on live from there.

The kinds of step live in `campaigns.steps`. Nothing here touches Django or the database:
`campaigns.runner` does the performing and storing.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from segflow.attributes import FlowUser

from .steps import Runtime, Step, describe_record

# More rt.patched() than this between two recorded steps is a loop, not a flow.
MAX_ABSENT_IN_A_ROW = 100


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
    def position(self) -> tuple[str, int] | None:
        """Where the flow's code is paused: the file and line of the yield it waits at (after a
        replay, the yield of the last recorded step); None before its first step or after its
        end. For people reading a cursor's place in the flow."""
        generator = self._generator
        if self._finished or inspect.getgeneratorstate(generator) != inspect.GEN_SUSPENDED:
            return None
        while inspect.isgenerator(getattr(generator, "gi_yieldfrom", None)):
            generator = generator.gi_yieldfrom
        return generator.gi_code.co_filename, generator.gi_frame.f_lineno

    @property
    def pending_writes(self) -> dict[str, Any]:
        """Attributes the flow assigned while running live, to be stored on the user."""
        return dict(self.user._writes)

    def _replay(self, history: list[RecordedStep]) -> None:
        for index, recorded in enumerate(history):
            object.__setattr__(self.user, "_attributes", dict(recorded.user_snapshot))
            step = self._advance()
            # A step the history may lack (rt.patched) stands aside for the record it meets.
            for _ in range(MAX_ABSENT_IN_A_ROW):
                if step is None or not _absent_from(step, recorded):
                    break
                self._to_send = step.absent_result
                step = self._advance()
            else:
                raise FlowDiverged(
                    f"step {index + 1}: the flow yields more than {MAX_ABSENT_IN_A_ROW} "
                    f"rt.patched() in a row before {_describe_record(recorded)}"
                )
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


def _absent_from(step: Step, recorded: RecordedStep) -> bool:
    return hasattr(step, "absent_result") and not step.replays_as(recorded.kind, recorded.args)


def _describe_record(recorded: RecordedStep) -> str:
    return describe_record(recorded.kind, recorded.args)
