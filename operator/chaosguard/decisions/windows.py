"""Time rules, pure: allowed windows (cron start + duration + time zone), blackouts and schedules.

A window opened by its most recent cron fire at or before `now` is open while `fire + duration`
lies ahead; an earlier fire cannot end later, so the latest fire decides. A window whose next
fire comes before it closes runs on, so `window_closes_at` follows the chain. Every function
takes `now` so that tests can ask about Tuesday afternoons and holiday freezes without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from chaosguard.api.durations import to_timedelta
from chaosguard.api.models import Blackout, TimeWindow

_MAX_CHAINED_FIRES = 1000


def _fires(cron: str, zone: str, start: datetime) -> croniter:
    return croniter(cron, start.astimezone(ZoneInfo(zone)))


def last_fire(cron: str, zone: str, now: datetime) -> datetime:
    """The latest cron fire at or before `now` (a fire exactly at `now` counts)."""
    fire: datetime = _fires(cron, zone, now + timedelta(seconds=1)).get_prev(datetime)
    return fire


def next_fire(cron: str, zone: str, after: datetime) -> datetime:
    """The first cron fire strictly after `after`."""
    fire: datetime = _fires(cron, zone, after).get_next(datetime)
    return fire


def window_is_open(window: TimeWindow, now: datetime) -> bool:
    opened = last_fire(window.cron, window.time_zone, now)
    return opened + to_timedelta(window.duration) > now


def window_closes_at(window: TimeWindow, now: datetime) -> datetime | None:
    """When the window that is open at `now` closes, or None if it is not open.

    A fire that comes before (or exactly when) the window closes extends it without a gap.
    """
    if not window_is_open(window, now):
        return None
    length = to_timedelta(window.duration)
    cursor = last_fire(window.cron, window.time_zone, now)
    closes = cursor + length
    for _ in range(_MAX_CHAINED_FIRES):
        cursor = next_fire(window.cron, window.time_zone, cursor)
        if cursor > closes:
            break
        closes = max(closes, cursor + length)
    return closes


def next_window_opens(window: TimeWindow, now: datetime) -> datetime:
    return next_fire(window.cron, window.time_zone, now)


def active_blackout(blackouts: list[Blackout], now: datetime) -> Blackout | None:
    for blackout in blackouts:
        if blackout.start <= now < blackout.end:
            return blackout
    return None


@dataclass(frozen=True)
class WindowGroup:
    """The windows of one policy: a time is allowed when it is inside any of them."""

    policy: str
    windows: tuple[TimeWindow, ...]

    def is_open(self, now: datetime) -> bool:
        return any(window_is_open(window, now) for window in self.windows)

    def closes_at(self, now: datetime) -> datetime | None:
        ends = [end for window in self.windows if (end := window_closes_at(window, now)) is not None]
        return max(ends) if ends else None

    def next_opens(self, now: datetime) -> datetime:
        return min(next_window_opens(window, now) for window in self.windows)

    def describe(self) -> str:
        return "; ".join(f"'{w.cron}' for {w.duration} ({w.time_zone})" for w in self.windows)


def allowed_until(groups: list[WindowGroup], blackouts: list[Blackout], now: datetime) -> datetime | None:
    """The moment the permission to run ends: the earliest window close or blackout start.

    None means no time rule ends it. Callers check `is_open`/`active_blackout` first.
    """
    limits = [end for group in groups if (end := group.closes_at(now)) is not None]
    limits += [blackout.start for blackout in blackouts if blackout.start > now]
    return min(limits) if limits else None


def next_allowed_start(
    groups: list[WindowGroup],
    blackouts: list[Blackout],
    now: datetime,
    horizon: timedelta = timedelta(days=400),
) -> datetime | None:
    """The first moment from `now` on at which every window group is open and no blackout holds."""
    candidate = now
    limit = now + horizon
    for _ in range(_MAX_CHAINED_FIRES):
        if candidate > limit:
            return None
        blackout = active_blackout(blackouts, candidate)
        if blackout is not None:
            candidate = blackout.end
            continue
        closed = [group for group in groups if not group.is_open(candidate)]
        if not closed:
            return candidate
        candidate = max(group.next_opens(candidate) for group in closed)
    return None
