"""Capture times as text (uinet_tap/isotime.py): the calendar of ``datetime`` wherever it
goes (years 1 to 9999), and any count of seconds a capture file can hold beyond it."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from uinet_tap.isotime import utc_second

EPOCH = datetime(1970, 1, 1)
FIRST = int((datetime(1, 1, 1) - EPOCH).total_seconds())
LAST = int((datetime(9999, 12, 31, 23, 59, 59) - EPOCH).total_seconds())
ERA = 146097 * 86400  # 400 Gregorian years, the calendar's whole cycle


@given(st.integers(FIRST, LAST))
def test_utc_second_is_the_calendar_of_datetime(whole: int):
    assert utc_second(whole) == (EPOCH + timedelta(seconds=whole)).isoformat()


def test_utc_second_at_known_times():
    assert utc_second(0) == "1970-01-01T00:00:00"
    assert utc_second(951782400) == "2000-02-29T00:00:00"  # a leap day of a century year
    assert utc_second(LAST + 1) == "10000-01-01T00:00:00"  # past datetime and gmtime's range


@given(st.integers(0, 2**64), st.integers(1, 2**40))
def test_utc_second_past_year_9999_keeps_the_400_year_cycle(whole: int, eras: int):
    """Where nothing else can say, the 400-year cycle can: ``eras`` cycles later it is the
    same time of the same day, the year ``400 * eras`` greater."""
    date, _, clock = utc_second(whole).rpartition("T")
    later_date, _, later_clock = utc_second(whole + eras * ERA).rpartition("T")
    year, _, rest = date.partition("-")
    later_year, _, later_rest = later_date.partition("-")
    assert (later_rest, later_clock) == (rest, clock)
    assert int(later_year) == int(year) + 400 * eras
