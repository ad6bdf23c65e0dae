"""Tests of the example config's flows, as a team writes them for its own: plain pytest, no
server, no database (docs/testing.md). segflow's own test command runs them too."""

from datetime import timedelta
from pathlib import Path

from segflow.testing import DEFAULT_START, simulate

CONFIG = Path(__file__).with_name("segflow_config.py")
ANN = {"email": "ann@example.com", "name": "Ann"}


def test_onboarding_welcomes_at_once():
    run = simulate(CONFIG, "onboarding", user=ANN)
    assert run.sent == ["welcome"]
    assert run.emails[0].subject == "Welcome Ann!"


def test_onboarding_reminds_a_user_whose_profile_is_not_complete_after_a_day():
    run = simulate(CONFIG, "onboarding", user=ANN)
    run.advance(days=1)
    assert run.sent == ["welcome", "complete-profile-reminder"]
    run.advance(days=6)
    assert run.sent == ["welcome", "complete-profile-reminder", "feature-highlights"]
    assert run.status == "completed"


def test_onboarding_skips_the_reminder_once_the_profile_is_complete():
    run = simulate(CONFIG, "onboarding", user=ANN)
    run.set_user(profileCompleted=True)
    run.advance(days=4)
    assert run.sent == ["welcome", "feature-highlights"]
    assert run.emails[1].subject == "Ann, three things to try this week"


def test_winback_backs_off_and_ends_when_the_user_logs_in():
    quiet_since = DEFAULT_START - timedelta(days=31)
    run = simulate(CONFIG, "winback-campaign", user={**ANN, "lastLoginAt": quiet_since.isoformat()})
    assert run.sent == ["winback"]
    run.advance(days=1 + 2 + 4)
    assert run.sent == ["winback"] * 4
    run.emit("login")
    assert run.status == "exited"
    run.advance(days=30)
    assert run.sent == ["winback"] * 4


def test_a_purchase_is_confirmed_whatever_the_campaign():
    run = simulate(CONFIG, "onboarding", user=ANN)
    run.emit("purchase", {"amount": 10})
    confirmations = [e for e in run.outbox if e.transaction == "purchase-confirmation"]
    assert [e.subject for e in confirmations] == ["Order Confirmed, Ann!"]
    assert run.sent == ["welcome"]  # a transaction's email is not the campaign's


def test_abandoned_cart_reminds_a_day_after_a_checkout_without_a_purchase():
    run = simulate(CONFIG, "abandoned-cart", user=ANN)
    assert run.status == "not entered"
    run.emit("checkout_started", {"cart": 3})
    assert run.status == "waiting" and run.sent == []
    run.advance(hours=23)
    assert run.sent == []
    run.advance(hours=1)
    assert run.sent == ["cart-reminder"]


def test_abandoned_cart_lets_a_buyer_go_as_converted_without_a_reminder():
    run = simulate(CONFIG, "abandoned-cart", user=ANN)
    run.emit("checkout_started", {"cart": 3})
    run.advance(hours=2)
    run.emit("purchase", {"amount": 30})
    assert run.status == "converted"
    run.advance(days=2)
    assert run.sent == []
