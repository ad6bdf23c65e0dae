"""Send windows: a campaign email due outside the campaign's window, in the user's time zone,
waits for the window to open; the cursor is due again at the opening, across changes of
daylight saving time. Through the API and the schedule, with the test's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils.dateparse import parse_datetime

from delivery.models import OutboxEmail
from segflow.config import ConfigError, validate_config
from segflow.config.sending_rules import SendWindowDef

from .conftest import START, sent

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
def hello(ctx, rt):
    yield rt.send_email("hello")
    yield rt.wait(days=1)
    yield rt.send_email("again")

def group(name):
    return ("SELECT u.id FROM users u "
            "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.group')) = '" + name + "'")

html = lambda user: "<p>hi</p>"
config = {
    "timezone_attribute": "tz",
    "default_timezone": "Europe/Berlin",
    "templates": {name: {"subject": name, "html": html} for name in ("hello", "again")},
    "segments": {"weekday": {"sql": group("weekday")}, "daily": {"sql": group("daily")}},
    "campaigns": {
        "weekday": {"segments": ["weekday"], "behavior": "static", "flow": hello,
                    "send_window": {"start": "09:00", "end": "17:00", "days": "mon-fri"}},
        "daily": {"segments": ["daily"], "behavior": "static", "flow": hello,
                  "send_window": {"start": "09:00", "end": "17:00"}},
    },
}
"""


@pytest.fixture
def world(write_config, pushed, clock):
    pushed(write_config(CONFIG))
    assert START.weekday() == 0  # Monday 2 March 2026, 09:00 UTC
    return clock


def put(api, user_id: str, group: str, tz: str | None = None) -> None:
    attributes = {"email": f"{user_id}@example.com", "group": group}
    if tz is not None:
        attributes["tz"] = tz
    response = api.put(f"/api/users/{user_id}", {"attributes": attributes}, format="json")
    assert response.status_code in (200, 201), response.content


def next_step_at(api, user_id: str) -> datetime:
    [entry] = api.get(f"/api/users/{user_id}").json()["campaigns"]
    return parse_datetime(entry["next_step_at"])


def sent_at(user_id: str, template: str) -> datetime:
    return OutboxEmail.objects.get(user_id=user_id, template_name=template).created_at


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_send_waits_for_the_window_to_open_in_the_users_zone(api, world):
    put(api, "london", "weekday", "Europe/London")  # 09:00 on Monday: open
    put(api, "la", "weekday", "America/Los_Angeles")  # 01:00 on Monday: not yet
    assert sent("london") == ["hello"]
    assert sent("la") == []
    assert next_step_at(api, "la") == utc(2026, 3, 2, 17)  # 09:00 PST

    world.advance_and_tick(hours=7, minutes=59, every=timedelta(minutes=30))
    assert sent("la") == []
    world.advance_and_tick(minutes=1)
    assert sent("la") == ["hello"]
    assert sent_at("la", "hello") == utc(2026, 3, 2, 17)

    # The wait after it counts from the send; its end falls in the window again.
    world.advance_and_tick(days=1)
    assert sent("la") == ["hello", "again"]
    assert sent_at("la", "again") == utc(2026, 3, 3, 17)


def test_the_window_follows_the_users_calendar_where_its_day_is_not_utcs(api, world):
    # Friday 20:00 UTC is Saturday 09:00 in Auckland (UTC+13): no weekday window there.
    world.move_to(utc(2026, 3, 6, 20))
    put(api, "akl", "weekday", "Pacific/Auckland")
    assert sent("akl") == []
    # Monday 09:00 in Auckland is Sunday 20:00 UTC.
    assert next_step_at(api, "akl") == utc(2026, 3, 8, 20)
    world.advance_and_tick(days=1, hours=23, minutes=59, every=timedelta(hours=2))
    assert sent("akl") == []
    world.advance_and_tick(minutes=1)
    assert sent("akl") == ["hello"]
    assert sent_at("akl", "hello").weekday() == 6  # a Sunday, in UTC

    # And the other way: Saturday 00:30 UTC is still Friday 16:30 in Los Angeles.
    world.move_to(utc(2026, 3, 7, 0, 30))
    put(api, "la", "weekday", "America/Los_Angeles")
    assert sent("la") == ["hello"]


def test_the_window_keeps_its_local_hours_across_a_change_of_daylight_saving_time(api, world):
    # Saturday 7 March 23:00 UTC is 18:00 EST in New York; the clocks go forward that night.
    world.move_to(utc(2026, 3, 7, 23))
    put(api, "nyc", "daily", "America/New_York")
    assert sent("nyc") == []
    # 09:00 EDT on Sunday is 13:00 UTC (on EST, as the evening before, it would be 14:00).
    assert next_step_at(api, "nyc") == utc(2026, 3, 8, 13)
    world.advance_and_tick(hours=13, minutes=59, every=timedelta(hours=1))
    assert sent("nyc") == []
    world.advance_and_tick(minutes=1)
    assert sent("nyc") == ["hello"]
    world.advance_and_tick(days=1)
    assert sent("nyc") == ["hello", "again"]
    assert sent_at("nyc", "again") == utc(2026, 3, 9, 13)


def test_no_zone_or_a_bad_zone_name_falls_back_to_the_configs_default(api, world):
    # 16:30 UTC on Monday: open in UTC, but 17:30 in Berlin, the config's default zone.
    world.move_to(utc(2026, 3, 2, 16, 30))
    put(api, "utc", "weekday", "UTC")
    put(api, "nowhere", "weekday", "Mars/Olympus")
    put(api, "unset", "weekday")
    put(api, "odd", "weekday", "../../etc/passwd")
    assert sent("utc") == ["hello"]
    for user_id in ("nowhere", "unset", "odd"):
        assert sent(user_id) == []
        assert next_step_at(api, user_id) == utc(2026, 3, 3, 8)  # 09:00 in Berlin (CET)
    world.advance_and_tick(hours=15, minutes=30)
    assert sent("nowhere") == sent("unset") == sent("odd") == ["hello"]


def test_a_user_who_moves_is_sent_to_in_their_new_zone(api, world):
    put(api, "mover", "weekday", "America/Los_Angeles")
    assert next_step_at(api, "mover") == utc(2026, 3, 2, 17)
    put(api, "mover", "weekday", "Europe/London")  # the change wakes the first step: now open
    world.advance_and_tick(minutes=1)
    assert sent("mover") == ["hello"]


# ---------------------------------------------------------------------------------------------
# The window's arithmetic, and the config's checks.


def window(start: str, end: str, days: str = "mon-sun") -> SendWindowDef:
    raw = {
        "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
        "campaigns": {
            "c": {
                "segments": ["all"],
                "flow": _flow,
                "send_window": {"start": start, "end": end, "days": days},
            }
        },
    }
    return validate_config(raw).campaigns["c"].send_window


def _flow(ctx, rt):
    yield rt.wait(days=1)


def test_an_overnight_window_and_the_autumn_change():
    berlin, new_york = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
    night = window("22:00", "06:00", "fri")
    # Friday 22:00 to Saturday 06:00, Berlin time; Saturday 05:00 is still Friday's window.
    assert night.next_opening(utc(2026, 3, 7, 4), berlin) is None
    assert night.next_opening(utc(2026, 3, 7, 5), berlin) == utc(2026, 3, 13, 21)
    # New York goes back to EST on Sunday 1 November 2026: 09:00 is 13:00 UTC before, 14:00 after.
    day = window("09:00", "17:00")
    assert day.next_opening(utc(2026, 10, 31, 22), new_york) == utc(2026, 11, 1, 14)
    assert day.next_opening(utc(2026, 10, 30, 22), new_york) == utc(2026, 10, 31, 13)
    # 24:00 ends the day; days may be listed and wrap around the week.
    assert window("00:00", "24:00", "sat-mon").days == frozenset({5, 6, 0})
    assert window("09:00", "12:00", "mon,wed").describe() == {
        "start": "09:00",
        "end": "12:00",
        "days": "mon,wed",
    }


@pytest.mark.parametrize(
    "send_window, message",
    [
        ({"start": "9am", "end": "17:00"}, "campaigns.c.send_window.start: must be a time of day"),
        ({"start": "09:00", "end": "25:00"}, "campaigns.c.send_window.end: must be a time of day"),
        ({"start": "09:00"}, "campaigns.c.send_window.end: required"),
        ({"start": "09:00", "end": "09:00"}, "campaigns.c.send_window: start and end are both"),
        (
            {"start": "09:00", "end": "17:00", "days": "mon-fry"},
            "campaigns.c.send_window.days: unknown day 'fry'",
        ),
        ({"start": "09:00", "end": "17:00", "days": []}, "campaigns.c.send_window.days: must be"),
        (
            {"start": "09:00", "end": "17:00", "timezone": "UTC"},
            "campaigns.c.send_window: unknown key 'timezone'",
        ),
        ("09:00-17:00", "campaigns.c.send_window: must be a dict"),
    ],
)
def test_a_bad_send_window_is_refused_naming_the_campaign_and_field(send_window, message):
    raw = {
        "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
        "campaigns": {"c": {"segments": ["all"], "flow": _flow, "send_window": send_window}},
    }
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    assert str(error.value).startswith(message), str(error.value)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"default_timezone": "Mars/Olympus"}, "default_timezone: must be an IANA time zone"),
        ({"timezone_attribute": ""}, "timezone_attribute: must name the user attribute"),
        ({"frequency_cap": {"emails": 0, "within": timedelta(days=7)}}, "frequency_cap.emails"),
        (
            {"frequency_cap": {"emails": 3, "within": 7}},
            "frequency_cap.within: must be a timedelta",
        ),
        ({"frequency_cap": {"emails": 3}}, "frequency_cap.within: must be a timedelta"),
        ({"frequency_cap": {"emails": 3, "per": 7}}, "frequency_cap: unknown key 'per'"),
    ],
)
def test_bad_time_zone_and_cap_settings_are_refused_naming_the_key(keys, message):
    with pytest.raises(ConfigError) as error:
        validate_config(keys)
    assert str(error.value).startswith(message), str(error.value)


def test_a_config_without_the_new_keys_keeps_its_fingerprints():
    raw = {
        "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
        "campaigns": {"c": {"segments": ["all"], "flow": _flow}},
    }
    plain = validate_config(raw)
    windowed = validate_config(
        {
            **raw,
            "campaigns": {
                "c": {**raw["campaigns"]["c"], "send_window": {"start": "09:00", "end": "17:00"}}
            },
        }
    )
    assert plain.campaigns["c"].send_window is None
    assert windowed.campaigns["c"].fingerprint != plain.campaigns["c"].fingerprint
    assert windowed.campaigns["c"].flow_fingerprint == plain.campaigns["c"].flow_fingerprint
    capped = validate_config({**raw, "frequency_cap": {"emails": 3, "within": timedelta(days=7)}})
    assert capped.fingerprint != plain.fingerprint
    assert validate_config(dict(raw)).fingerprint == plain.fingerprint
