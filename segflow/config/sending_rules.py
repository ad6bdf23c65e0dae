"""When campaign emails may go out: a campaign's send window in the user's time zone, and the
config's frequency cap. The loaded definitions and their arithmetic, in plain Python.

`segflow.config.loading` checks what a config file writes and builds these; the runner asks a
window when it next opens (`SendWindowDef.next_opening`), and the outbox counts against the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_A_DAY = 24 * 60


@dataclass(frozen=True)
class SendWindowDef:
    """When a campaign's emails may go out, in the user's local time: from `start` to `end`
    (minutes after midnight; an `end` at or before `start` is the next day's) on the `days` the
    window opens (0 is Monday)."""

    start: int
    end: int
    days: frozenset[int]

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def describe(self) -> dict[str, str]:
        return {
            "start": _clock(self.start),
            "end": _clock(self.end),
            "days": ",".join(DAY_NAMES[d] for d in sorted(self.days)),
        }

    def __str__(self) -> str:
        described = self.describe()
        every_day = len(self.days) == len(DAY_NAMES)
        days = "every day" if every_day else described["days"]
        return f"{described['start']}-{described['end']} {days}"

    def next_opening(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """None if the window is open at `now` in `zone`; else the moment (UTC) it next opens.

        Openings and closings are wall-clock times on the user's calendar, turned into instants
        with the zone's rules of that date, so a window keeps its local hours across a change
        of daylight saving time. An opening in the hour the clocks skip comes an hour later on
        the wall; one in the hour that repeats is its first occurrence."""
        today = now.astimezone(zone).date()
        soonest: datetime | None = None
        # An overnight window opened yesterday may still be open; a week ahead always has an
        # opening day.
        for offset in range(-1, 9):
            day = today + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = _instant(day, self.start, zone)
            closes = _instant(day, self.end + (MINUTES_A_DAY if self.overnight else 0), zone)
            if opens <= now < closes:
                return None
            if opens > now and (soonest is None or opens < soonest):
                soonest = opens
        return soonest


@dataclass(frozen=True)
class FrequencyCapDef:
    """At most `emails` campaign emails to one user within any `within` (transactional email
    neither counts nor is capped)."""

    emails: int
    within: timedelta

    def describe(self) -> dict[str, Any]:
        return {"emails": self.emails, "within_seconds": self.within.total_seconds()}

    @property
    def reason(self) -> str:
        """Why a capped email was skipped: the same words for every user, so that the admin
        counts them as one reason."""
        plural = "s" if self.emails != 1 else ""
        return (
            f"frequency cap: the user already had {self.emails} campaign email{plural} in the "
            f"last {_duration(self.within)} (the config's frequency_cap)"
        )


def _instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    local = datetime.combine(day, time()) + timedelta(minutes=minutes)
    return local.replace(tzinfo=zone).astimezone(UTC)


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


@lru_cache(maxsize=1024)
def zone_named(name: str) -> ZoneInfo | None:
    """The IANA time zone of that name ("Europe/Berlin"), or None if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def user_zone(attributes: dict[str, Any], attribute: str, default: str) -> ZoneInfo:
    """The time zone a user's attribute names, or the default zone when it is missing or names
    no zone."""
    named = attributes.get(attribute) if attribute else None
    zone = zone_named(named.strip()) if isinstance(named, str) and named.strip() else None
    return zone or zone_named(default) or ZoneInfo("UTC")
