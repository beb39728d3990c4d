"""Capture times as text: UTC, for any time a capture file can hold."""

from __future__ import annotations


def utc_second(whole: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of an integer count of seconds since the epoch, UTC, for any
    count: a capture's times are what its file says (a pcapng timestamp is 64 bits, 2**64
    seconds at a resolution of one), past what ``time.gmtime`` and ``datetime`` take (year
    9999, or 2**31). The proleptic Gregorian calendar by integer arithmetic (H. Hinnant's
    civil_from_days), as gmtime counts (no leap seconds); a year past 9999 has more digits."""
    days, rest = divmod(whole, 86400)
    z = days + 719468  # days since 0000-03-01
    era = z // 146097
    doe = z - era * 146097  # day of the 400-year era
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the year from March
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
