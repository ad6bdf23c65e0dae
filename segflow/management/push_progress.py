"""How `segflow_push` shows a long evaluation of segments: a progress bar in a terminal, plain
lines in a log (CI's, or anything else that is not a terminal)."""

from __future__ import annotations

import time
from datetime import timedelta
from types import TracebackType

from django.core.management.base import OutputWrapper
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from segflow.push import EvaluationProgress


class PushProgress:
    """The `progress` of a push. Quiet while the users fit in one range (each segment is then
    evaluated in one statement): such an evaluation is over before there is anything to watch."""

    def __init__(self, out: OutputWrapper, *, every: float = 10.0) -> None:
        self.out = out
        self.every = every
        self.terminal = out.isatty()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._printed_at: float | None = None
        self._segments_done = 0

    def __enter__(self) -> PushProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, progress: EvaluationProgress) -> None:
        if progress.ranges <= progress.segments:
            return
        if self.terminal:
            self._show_bar(progress)
        else:
            self._print_line(progress)

    def _show_bar(self, progress: EvaluationProgress) -> None:
        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ranges, {task.fields[counts]}"),
                TimeRemainingColumn(),
                console=Console(file=self.out._out),
            )
            self._bar.start()
            self._task = self._bar.add_task("Evaluating segments", total=progress.ranges, counts="")
        self._bar.update(
            self._task,
            completed=progress.ranges_done,
            description=(
                f"Segments {progress.segments_done}/{progress.segments} ({progress.segment})"
            ),
            counts=f"{progress.entered} user(s) entered, {progress.left} left",
        )

    def _print_line(self, progress: EvaluationProgress) -> None:
        now = time.monotonic()
        segment_finished = progress.segments_done > self._segments_done
        self._segments_done = progress.segments_done
        finished = progress.ranges_done == progress.ranges
        due = self._printed_at is None or now - self._printed_at >= self.every
        if not (due or segment_finished or finished):
            return
        self._printed_at = now
        self.out.write(line(progress))


def line(progress: EvaluationProgress) -> str:
    """`Evaluating segments: 2/3 segments, 7/12 ranges (pro), 40 user(s) entered, 2 left, about
    0:00:05 left`: one line of a log."""
    if progress.ranges_done == progress.ranges:
        when = f"done in {_duration(progress.seconds)}"
    else:
        left = progress.seconds_left
        when = f"about {_duration(left)} left" if left is not None else "starting"
    return (
        f"Evaluating segments: {progress.segments_done}/{progress.segments} segments, "
        f"{progress.ranges_done}/{progress.ranges} ranges ({progress.segment}), "
        f"{progress.entered} user(s) entered, {progress.left} left, {when}"
    )


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
