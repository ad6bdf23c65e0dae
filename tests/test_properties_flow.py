"""Properties of the flow engine (plain Python, no database), on randomly generated flows.

A flow here is a generated program (a tree of sends, waits, branches on user attributes and on
send results, attribute writes and bounded loops) run by a small interpreter written as a
generator function, as a config's flow would be.

- Resuming is continuing: re-creating FlowRun after every single step and replaying the recorded
  history (snapshots and results, stored as JSON) gives the same steps, snapshots and writes as
  one uninterrupted run of the same generator, while the user's attributes change between steps.
- A changed flow is caught at the first recorded step it no longer yields (FlowDiverged, naming
  that step), and a wait whose duration alone changed still replays.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from types import SimpleNamespace

from hypothesis import given, note, settings
from hypothesis import strategies as st

from campaigns.flow import FlowDiverged, FlowRun, RecordedStep
from campaigns.steps import Runtime, SendEmail, SendEmailResult, Wait

TEMPLATES = ("welcome", "tip", "promo", "bye")
ATTRIBUTES = ("plan", "score", "vip", "prefs")
MAX_STEPS = 40  # both runs stop here: a generated loop nest can yield many steps
DELETE = "<deleted>"  # in a change: the attribute is removed

# ---------------------------------------------------------------------------------------------
# Generated programs. A block is a tuple of statements; a statement is a tuple, first the op:
#   ("send", template)                      yield rt.send_email(template)
#   ("send_if", template, then, else)       result = yield ...; branch on result.success
#   ("wait", seconds)                       yield rt.wait(seconds=seconds)
#   ("if", condition, then, else)
#   ("set", attribute, expression)          ctx.user.<attribute> = <expression>
#   ("repeat", count, body)                 count: an int, or ("attr", name) clamped to 0..3
#   ("while", condition, body, bound)       while <condition> and fewer than bound rounds
# Conditions: ("truthy", name, by_item), ("eq", name, value), ("nested", name, key),
# ("not", condition). Expressions: ("const", value), ("copy", name), ("incr", name),
# ("last_success",).

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 4),
    st.sampled_from(["", "pro", "free"]),
)
values = st.one_of(
    scalars, st.dictionaries(st.sampled_from(["country", "tier"]), scalars, max_size=2)
)
names = st.sampled_from(ATTRIBUTES)

conditions = st.recursive(
    st.one_of(
        st.tuples(st.just("truthy"), names, st.booleans()),
        st.tuples(st.just("eq"), names, scalars),
        st.tuples(st.just("nested"), names, st.sampled_from(["country", "tier"])),
    ),
    lambda inner: st.tuples(st.just("not"), inner),
    max_leaves=2,
)
expressions = st.one_of(
    st.tuples(st.just("const"), values),
    st.tuples(st.just("copy"), names),
    st.tuples(st.just("incr"), names),
    st.tuples(st.just("last_success")),
)
durations = st.one_of(
    st.sampled_from([0, 60, 3600, 86400, 3 * 86400]),
    st.floats(0, 30 * 86400, allow_nan=False).map(lambda s: round(s, 3)),
)
simple_statements = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(TEMPLATES)),
    st.tuples(st.just("wait"), durations),
    st.tuples(st.just("set"), names, expressions),
)


def _compound(blocks):
    return st.one_of(
        st.tuples(st.just("send_if"), st.sampled_from(TEMPLATES), blocks, blocks),
        st.tuples(st.just("if"), conditions, blocks, blocks),
        st.tuples(
            st.just("repeat"),
            st.one_of(st.integers(0, 3), st.tuples(st.just("attr"), names)),
            blocks,
        ),
        st.tuples(st.just("while"), conditions, blocks, st.integers(1, 3)),
    )


blocks = st.recursive(
    st.lists(simple_statements, max_size=4).map(tuple),
    lambda inner: st.lists(st.one_of(simple_statements, _compound(inner)), max_size=4).map(tuple),
    max_leaves=12,
)
programs = st.lists(st.one_of(simple_statements, _compound(blocks)), min_size=2, max_size=8).map(
    tuple
)
user_attributes = st.dictionaries(names, values, max_size=4)
# What changes in the stored user between step i and step i + 1 (outside the flow).
changes = st.lists(
    st.dictionaries(names, st.one_of(values, st.just(DELETE)), max_size=2), max_size=MAX_STEPS
)
# Whether the n-th send_email succeeds (missing: it does).
successes = st.lists(st.booleans(), max_size=MAX_STEPS)


def _read(ctx, name: str, by_item: bool = False):
    return ctx.user[name] if by_item else getattr(ctx.user, name)


def _holds(condition, ctx) -> bool:
    op = condition[0]
    if op == "truthy":
        return bool(_read(ctx, condition[1], condition[2]))
    if op == "eq":
        return _read(ctx, condition[1]) == condition[2]
    if op == "nested":
        value = _read(ctx, condition[1])
        return isinstance(value, dict) and bool(value.get(condition[2]))
    return not _holds(condition[1], ctx)


def _as_count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _evaluate(expression, ctx, env):
    op = expression[0]
    if op == "const":
        return copy.deepcopy(expression[1])
    if op == "copy":
        return copy.deepcopy(_read(ctx, expression[1]))
    if op == "incr":
        return _as_count(_read(ctx, expression[1])) + 1
    return bool(getattr(env["last"], "success", False))


def _run_block(block, ctx, rt, env):
    for statement in block:
        op = statement[0]
        if op == "send":
            env["last"] = yield rt.send_email(statement[1])
        elif op == "send_if":
            env["last"] = yield rt.send_email(statement[1])
            succeeded = bool(getattr(env["last"], "success", False))
            yield from _run_block(statement[2] if succeeded else statement[3], ctx, rt, env)
        elif op == "wait":
            yield rt.wait(seconds=statement[1])
        elif op == "if":
            chosen = statement[2] if _holds(statement[1], ctx) else statement[3]
            yield from _run_block(chosen, ctx, rt, env)
        elif op == "set":
            setattr(ctx.user, statement[1], _evaluate(statement[2], ctx, env))
        elif op == "repeat":
            count = statement[1]
            if isinstance(count, tuple):
                count = min(max(_as_count(_read(ctx, count[1])), 0), 3)
            for _ in range(count):
                yield from _run_block(statement[2], ctx, rt, env)
        elif op == "while":
            rounds = 0
            while rounds < statement[3] and _holds(statement[1], ctx):
                rounds += 1
                yield from _run_block(statement[2], ctx, rt, env)
        else:  # pragma: no cover - the strategies make no other op
            raise AssertionError(op)


def flow_of(program):
    """The generated program as a campaign flow: a generator function of (ctx, rt)."""

    def flow(ctx, rt):
        yield from _run_block(program, ctx, rt, {"last": None})

    return flow


# ---------------------------------------------------------------------------------------------
# Running a flow two ways.


@dataclass
class Trace:
    steps: list = field(default_factory=list)  # (kind, args) of each step
    results: list = field(default_factory=list)  # what each step gave back, as recorded
    snapshots: list = field(default_factory=list)  # the attributes the flow saw at each step
    stored: dict = field(default_factory=dict)  # the user's attributes at the end


def _result(sends: int, outcomes: list[bool]) -> SendEmailResult:
    ok = outcomes[sends] if sends < len(outcomes) else True
    return SendEmailResult(
        success=ok,
        status="sent" if ok else "skipped",
        reason="" if ok else "the user has no email address",
        outbox_id=1000 + sends,
    )


def _apply(change: dict, attributes: dict) -> None:
    for name, value in change.items():
        if value == DELETE:
            attributes.pop(name, None)
        else:
            attributes[name] = copy.deepcopy(value)


def _stored(value):
    """As a JSON column gives it back."""
    return json.loads(json.dumps(value))


class PlainUser:
    """`ctx.user` as documented, for the uninterrupted run: attributes by attribute or by key,
    missing ones read as None, assignments seen at once and stored on the user."""

    def __init__(self, attributes: dict) -> None:
        object.__setattr__(self, "attributes", attributes)

    def __getattr__(self, name):
        return self.attributes.get(name)

    def __getitem__(self, name):
        return self.attributes.get(name)

    def __setattr__(self, name, value):
        self.attributes[name] = value


def run_uninterrupted(flow, initial: dict, changed: list[dict], outcomes: list[bool]) -> Trace:
    """One generator, driven from start to end without the engine; the stored user is what the
    flow sees, and changes between steps reach it as they would reach a resumed flow."""
    trace = Trace(stored=copy.deepcopy(initial))
    user = PlainUser(trace.stored)
    generator = flow(SimpleNamespace(user=user, campaign="c"), Runtime())
    reply, sends = None, 0
    for index in range(MAX_STEPS):
        snapshot = copy.deepcopy(trace.stored)
        try:
            step = generator.send(reply)
        except StopIteration:
            break
        reply = None
        if isinstance(step, SendEmail):
            reply = _result(sends, outcomes)
            sends += 1
        trace.steps.append((step.kind, step.to_record()))
        trace.results.append(_stored(reply.__dict__ if reply is not None else None))
        trace.snapshots.append(snapshot)
        if index < len(changed):
            _apply(changed[index], trace.stored)
    return trace


def run_resumed(flow, initial: dict, changed: list[dict], outcomes: list[bool]) -> Trace:
    """As workers run a cursor: a new FlowRun for every step, replaying what was recorded (as
    JSON), then one live step; the flow's writes are stored on the user after each step."""
    trace = Trace(stored=copy.deepcopy(initial))
    history: list[RecordedStep] = []
    sends = 0
    for index in range(MAX_STEPS):
        run = FlowRun(flow, user_id="u1", attributes=_stored(trace.stored), history=list(history))
        upcoming = run.next_step()
        trace.stored.update(copy.deepcopy(run.pending_writes))
        if upcoming.step is None:
            break
        result = None
        if isinstance(upcoming.step, SendEmail):
            result = _result(sends, outcomes).__dict__
            sends += 1
        record = _stored(
            [upcoming.step.kind, upcoming.step.to_record(), result, upcoming.user_snapshot]
        )
        history.append(RecordedStep(*record))
        trace.steps.append((record[0], record[1]))
        trace.results.append(record[2])
        trace.snapshots.append(record[3])
        if index < len(changed):
            _apply(changed[index], trace.stored)
    return trace


def run_live(flow, initial: dict, outcomes: list[bool]) -> Trace:
    """One FlowRun from the start, never resumed, the user unchanged from outside."""
    trace = Trace()
    run = FlowRun(flow, user_id="u1", attributes=copy.deepcopy(initial), history=[])
    sends = 0
    for _ in range(MAX_STEPS):
        upcoming = run.next_step()
        if upcoming.step is None:
            break
        result = None
        if isinstance(upcoming.step, SendEmail):
            result = _result(sends, outcomes)
            sends += 1
        trace.steps.append((upcoming.step.kind, upcoming.step.to_record()))
        trace.results.append(_stored(result.__dict__ if result is not None else None))
        trace.snapshots.append(upcoming.user_snapshot)
        run.step_done(upcoming.step, result)
    trace.stored = {**copy.deepcopy(initial), **run.pending_writes}
    return trace


def _same(a: Trace, b: Trace) -> None:
    assert a.steps == b.steps
    assert a.results == b.results
    assert a.snapshots == b.snapshots
    assert a.stored == b.stored


@settings(max_examples=120, deadline=None)
@given(programs, user_attributes, changes, successes)
def test_resuming_after_every_step_is_the_same_as_one_uninterrupted_run(
    program, initial, changed, outcomes
):
    flow = flow_of(program)
    resumed = run_resumed(flow, initial, changed, outcomes)
    note(f"steps: {resumed.steps}")
    _same(resumed, run_uninterrupted(flow, initial, changed, outcomes))
    # And the engine run live, in one go, is that same uninterrupted run.
    _same(run_live(flow, initial, outcomes), run_uninterrupted(flow, initial, [], outcomes))


# ---------------------------------------------------------------------------------------------
# A changed flow.


def recorded_history(flow, initial, changed, outcomes) -> list[RecordedStep]:
    trace = run_resumed(flow, initial, changed, outcomes)
    return [
        RecordedStep(kind, args, result, snapshot)
        for (kind, args), result, snapshot in zip(
            trace.steps, trace.results, trace.snapshots, strict=True
        )
    ]


def changed_at(flow, position: int, change: tuple, seen: list):
    """`flow` with its step at `position` changed (replaced, removed, or preceded by another);
    every step it yields, and its end (None), is appended to `seen`."""

    def changed_flow(ctx, rt):
        seen.clear()
        inner = flow(ctx, rt)
        index, reply = 0, None
        while True:
            try:
                step = inner.send(reply)
            except StopIteration:
                seen.append(None)
                return
            if index == position:
                op = change[0]
                if op == "remove":
                    index += 1
                    reply = SendEmailResult(success=True) if isinstance(step, SendEmail) else None
                    continue
                if op == "insert":
                    seen.append(change[1])
                    yield change[1]
                if op == "replace":
                    step = change[1]
            seen.append(step)
            reply = yield step
            index += 1

    return changed_flow


def _replays_as(step, recorded: RecordedStep) -> bool:
    """The documented rule: the same kind of step, and a send of the same template; a wait
    replays as any wait, whatever its duration."""
    if step.kind != recorded.kind:
        return False
    return step.kind == Wait.kind or step.to_record() == recorded.args


def _changes_for(recorded: RecordedStep):
    other_template = st.sampled_from(TEMPLATES + ("changed",)).filter(
        lambda t: t != recorded.args.get("template")
    )
    any_step = st.one_of(other_template.map(SendEmail), durations.map(lambda s: Wait(s)))
    removed_or_inserted = st.one_of(
        st.just(("remove", None)), any_step.map(lambda step: ("insert", step))
    )
    if recorded.kind == SendEmail.kind:
        # Another template, or a wait instead of the send: the step itself is different.
        different = st.one_of(other_template.map(SendEmail), durations.map(Wait))
    else:
        different = other_template.map(SendEmail)
    return st.one_of(different.map(lambda step: ("replace", step)), removed_or_inserted)


@settings(max_examples=150, deadline=None)
@given(programs, user_attributes, changes, successes, st.data())
def test_a_changed_step_diverges_at_exactly_that_step(program, initial, changed, outcomes, data):
    flow = flow_of(program)
    history = recorded_history(flow, initial, changed, outcomes)
    if not history:
        return  # a flow that yields nothing has nothing to diverge from
    position = data.draw(st.integers(0, len(history) - 1), label="changed step")
    replayed = history[: data.draw(st.integers(position + 1, len(history)), label="replayed")]
    change = data.draw(_changes_for(history[position]), label="change")
    seen: list = []

    try:
        FlowRun(
            changed_at(flow, position, change, seen),
            user_id="u1",
            attributes={},
            history=replayed,
        )
    except FlowDiverged as exc:
        reported = str(exc)
    else:
        reported = None
    note(f"reported: {reported}; yielded on replay: {seen}")

    # Where the changed flow first stops matching what was recorded, as it yielded it.
    first = None
    for index, recorded in enumerate(replayed):
        assert index < len(seen), "replay stopped before the end of the history, silently"
        if seen[index] is None or not _replays_as(seen[index], recorded):
            first = index
            break
    if change[0] == "replace":  # the step itself is another one: nothing else can match
        assert first == position
    if first is None:
        assert reported is None
        return
    assert reported is not None, f"step {first + 1} changed, and the replay did not notice"
    now = "ends here" if seen[first] is None else f"yields {seen[first].describe()}"
    was = {SendEmail.kind: SendEmail, Wait.kind: Wait}[replayed[first].kind](
        **replayed[first].args
    ).describe()
    assert reported == (
        f"step {first + 1}: the flow now {now}, but this user's step {first + 1} was {was}"
    )


@settings(max_examples=100, deadline=None)
@given(programs, user_attributes, changes, successes, durations, st.data())
def test_a_wait_whose_duration_alone_changed_still_replays(
    program, initial, changed, outcomes, duration, data
):
    flow = flow_of(program)
    history = recorded_history(flow, initial, changed, outcomes)
    waits = [index for index, step in enumerate(history) if step.kind == Wait.kind]
    if not waits:
        return
    position = data.draw(st.sampled_from(waits), label="changed wait")
    replayed = history[: data.draw(st.integers(position + 1, len(history)), label="replayed")]
    longer = changed_at(flow, position, ("replace", Wait(duration)), [])

    resumed = FlowRun(longer, user_id="u1", attributes={"plan": "pro"}, history=replayed)
    original = FlowRun(flow, user_id="u1", attributes={"plan": "pro"}, history=replayed)
    # And it carries on from there as the unchanged flow does.
    assert resumed.next_step() == original.next_step()
