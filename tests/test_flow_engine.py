"""The flow engine on its own: plain Python, no database."""

from datetime import timedelta

import pytest

from campaigns.flow import FlowDiverged, FlowFailed, FlowRun, RecordedStep
from campaigns.steps import Runtime, SendEmail, SendEmailResult, Wait


def drive(flow, attributes=None, results=None, history=None):
    """Run a flow live to its end, giving send_email the results in `results` (default success).
    Returns the recorded history."""
    history = list(history or [])
    results = list(results or [])
    run = FlowRun(flow, user_id="u1", attributes=attributes or {}, history=history)
    while True:
        nxt = run.next_step()
        if nxt.step is None:
            return history, run
        result = None
        if isinstance(nxt.step, SendEmail):
            result = results.pop(0) if results else SendEmailResult(success=True)
        history.append(
            RecordedStep(
                nxt.step.kind,
                nxt.step.to_record(),
                result.__dict__ if result is not None else None,
                nxt.user_snapshot,
            )
        )
        run.step_done(nxt.step, result)


def onboarding(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    if not ctx.user.profileCompleted:
        yield rt.send_email("complete-profile-reminder")
        yield rt.wait(days=3)
    yield rt.wait(days=3)
    yield rt.send_email("feature-highlights")


def kinds(history):
    return [h.args.get("template", h.kind) for h in history]


def test_a_missing_attribute_reads_as_none_and_the_flow_branches_on_it():
    history, _ = drive(onboarding)
    assert kinds(history) == [
        "welcome",
        "wait",
        "complete-profile-reminder",
        "wait",
        "wait",
        "feature-highlights",
    ]
    history, _ = drive(onboarding, attributes={"profileCompleted": True})
    assert kinds(history) == ["welcome", "wait", "wait", "feature-highlights"]


def test_replay_uses_the_recorded_attributes_not_the_current_ones():
    history, _ = drive(onboarding)
    partial = history[:3]  # welcome, wait, reminder: recorded without profileCompleted
    run = FlowRun(onboarding, user_id="u1", attributes={"profileCompleted": True}, history=partial)
    # Replay followed the recorded branch; live, the flow goes on inside that branch.
    assert run.next_step().step == Wait(seconds=timedelta(days=3).total_seconds())


def test_a_changed_flow_that_yields_another_step_diverges_with_a_clear_reason():
    history, _ = drive(onboarding)

    def changed(ctx, rt):
        yield rt.send_email("welcome")
        yield rt.wait(days=1)
        yield rt.send_email("something-else")

    with pytest.raises(
        FlowDiverged, match=r"step 3: the flow now yields send_email\('something-else'\)"
    ):
        FlowRun(changed, user_id="u1", attributes={}, history=history[:3])


def test_a_flow_that_now_ends_early_diverges():
    history, _ = drive(onboarding)

    def shorter(ctx, rt):
        yield rt.send_email("welcome")

    with pytest.raises(FlowDiverged, match="step 2: the flow now ends here"):
        FlowRun(shorter, user_id="u1", attributes={}, history=history[:3])


def test_a_changed_wait_duration_still_replays():
    history, _ = drive(onboarding)

    def longer_wait(ctx, rt):
        yield rt.send_email("welcome")
        yield rt.wait(days=2)
        yield rt.send_email("complete-profile-reminder")

    run = FlowRun(longer_wait, user_id="u1", attributes={}, history=history[:2])
    assert run.next_step().step == SendEmail("complete-profile-reminder")


def test_send_email_results_reach_the_flow_live_and_on_replay():
    def branchy(ctx, rt):
        result = yield rt.send_email("first")
        if not result.success:
            yield rt.send_email("fallback")

    history, _ = drive(branchy, results=[SendEmailResult(success=False, reason="no email")])
    assert kinds(history) == ["first", "fallback"]
    # On replay the recorded failure is fed back, so the flow takes the same branch again.
    run = FlowRun(branchy, user_id="u1", attributes={}, history=history[:1])
    assert run.next_step().step == SendEmail("fallback")


def test_assignments_to_ctx_user_are_seen_at_once_and_reported_as_writes():
    def tagging(ctx, rt):
        ctx.user.stage = "welcomed"
        ctx.user["visits"] = (ctx.user.visits or 0) + 1
        yield rt.send_email("hi" if ctx.user.stage == "welcomed" else "never")

    history, run = drive(tagging, attributes={"visits": 2})
    assert kinds(history) == ["hi"]
    assert run.pending_writes == {"stage": "welcomed", "visits": 3}
    # Replaying does not write again.
    replayed = FlowRun(tagging, user_id="u1", attributes={"visits": 3}, history=history)
    assert replayed.pending_writes == {}


def test_a_raising_flow_fails_with_its_error():
    def broken(ctx, rt):
        yield rt.send_email("hi")
        raise KeyError("plan")

    with pytest.raises(FlowFailed, match="KeyError") as error:
        drive(broken)
    assert "raise KeyError" in error.value.details


def test_yielding_something_that_is_not_a_step_fails_clearly():
    def wrong(ctx, rt):
        yield "welcome"

    with pytest.raises(FlowFailed, match="a flow must yield steps"):
        drive(wrong)


def test_wait_takes_weeks_days_hours_minutes_seconds_and_refuses_negative():
    rt = Runtime()
    step = rt.wait(weeks=1, days=1, hours=1, minutes=1, seconds=1)
    assert step.duration == timedelta(weeks=1, days=1, hours=1, minutes=1, seconds=1)
    assert rt.wait(timedelta(hours=2)).duration == timedelta(hours=2)
    with pytest.raises(ValueError, match="zero or more"):
        rt.wait(days=-1)
