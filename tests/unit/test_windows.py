from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from chaosguard.api.models import Blackout, TimeWindow
from chaosguard.decisions.windows import (
    WindowGroup,
    allowed_until,
    next_allowed_start,
    window_closes_at,
    window_is_open,
)

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAY_MORNINGS = TimeWindow(cron="0 10 * * MON-THU", duration="6h", timeZone="Europe/Berlin")


def test_tuesday_afternoon_is_inside_a_berlin_window() -> None:
    tuesday_afternoon = datetime(2026, 11, 24, 14, 0, tzinfo=BERLIN)
    assert window_is_open(WEEKDAY_MORNINGS, tuesday_afternoon)
    assert window_closes_at(WEEKDAY_MORNINGS, tuesday_afternoon) == datetime(2026, 11, 24, 16, 0, tzinfo=BERLIN)


def test_edges_and_weekends() -> None:
    assert window_is_open(WEEKDAY_MORNINGS, datetime(2026, 11, 24, 10, 0, tzinfo=BERLIN))
    assert not window_is_open(WEEKDAY_MORNINGS, datetime(2026, 11, 24, 16, 0, tzinfo=BERLIN))
    assert not window_is_open(WEEKDAY_MORNINGS, datetime(2026, 11, 24, 9, 59, tzinfo=BERLIN))
    assert not window_is_open(WEEKDAY_MORNINGS, datetime(2026, 11, 27, 11, 0, tzinfo=BERLIN))  # Friday


def test_time_zone_is_honoured() -> None:
    # 10:30 in Berlin is 09:30 UTC in winter.
    assert window_is_open(WEEKDAY_MORNINGS, datetime(2026, 11, 24, 9, 30, tzinfo=UTC))
    assert not window_is_open(WEEKDAY_MORNINGS, datetime(2026, 11, 24, 15, 30, tzinfo=UTC))


def test_back_to_back_windows_chain() -> None:
    hourly = TimeWindow(cron="0 * * * *", duration="1h")
    now = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    # Every hour reopens as it closes, so the window never closes within the chain limit.
    closes = window_closes_at(hourly, now)
    assert closes is not None and closes - now > timedelta(days=1)


def test_next_allowed_start_skips_blackouts() -> None:
    group = WindowGroup("ChaosPolicy/default", (WEEKDAY_MORNINGS,))
    freeze = Blackout(start=datetime(2026, 11, 24, tzinfo=UTC), end=datetime(2026, 11, 26, tzinfo=UTC))
    monday_evening = datetime(2026, 11, 23, 20, 0, tzinfo=BERLIN)
    assert next_allowed_start([group], [freeze], monday_evening) == datetime(2026, 11, 26, 10, 0, tzinfo=BERLIN)


def test_allowed_until_is_the_earliest_limit() -> None:
    group = WindowGroup("ChaosPolicy/default", (WEEKDAY_MORNINGS,))
    now = datetime(2026, 11, 24, 11, 0, tzinfo=BERLIN)
    freeze_start = datetime(2026, 11, 24, 12, 0, tzinfo=BERLIN)
    freeze = Blackout(start=freeze_start, end=freeze_start + timedelta(days=1))
    assert allowed_until([group], [freeze], now) == freeze_start
    assert allowed_until([group], [], now) == datetime(2026, 11, 24, 16, 0, tzinfo=BERLIN)
    assert allowed_until([], [], now) is None
