"""Go's time.Parse for the two layouts a built-in object's times are decoded with.

apimachinery's metav1.Time.UnmarshalJSON parses with time.RFC3339 and metav1.MicroTime's with
RFC3339Micro ("2006-01-02T15:04:05.000000Z07:00"), whose fraction must have exactly six digits:
Python's `datetime.isoformat()` drops the fraction at a whole second, which a MicroTime refuses
(`cannot parse "+00:00" as ".000000"`). This follows src/time/format.go's parse element by element
for those layouts (getnum, parseNanoseconds, the ISO 8601 zone, the day check after the loop), with
its error texts (ParseError.Error, quote).
"""

from __future__ import annotations

import calendar
from typing import Final

RFC3339: Final = "2006-01-02T15:04:05Z07:00"
RFC3339_MICRO: Final = "2006-01-02T15:04:05.000000Z07:00"

# The layouts as parse walks them: (literal prefix, element) pairs.
_ELEMENTS: Final = {
    RFC3339: (("", "2006"), ("-", "01"), ("-", "02"), ("T", "15"), (":", "04"), (":", "05"), ("", "Z07:00")),
    RFC3339_MICRO: (
        ("", "2006"),
        ("-", "01"),
        ("-", "02"),
        ("T", "15"),
        (":", "04"),
        (":", "05"),
        ("", ".000000"),
        ("", "Z07:00"),
    ),
}


class _Bad(Exception):
    """errBad: the element does not parse."""


def quote(s: str) -> str:
    """time's quote: double quotes, `"` and `\\` escaped, non-ASCII and control bytes as \\x.."""
    out = ['"']
    for c in s:
        if ord(c) >= 0x80 or c < " ":
            out += [f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass")]
        else:
            out.append("\\" + c if c in '"\\' else c)
    return "".join(out) + '"'


def _error(layout: str, value: str, layout_elem: str, value_elem: str, message: str = "") -> str:
    if message:
        return f"parsing time {quote(value)}{message}"
    return (
        f"parsing time {quote(value)} as {quote(layout)}: "
        f"cannot parse {quote(value_elem)} as {quote(layout_elem)}"
    )


def _digit(s: str, i: int) -> bool:
    return len(s) > i and "0" <= s[i] <= "9"


def _getnum(s: str, fixed: bool) -> tuple[int, str]:
    if not _digit(s, 0):
        raise _Bad
    if not _digit(s, 1):
        if fixed:
            raise _Bad
        return int(s[0]), s[1:]
    return int(s[:2]), s[2:]


def _atoi(s: str) -> int:
    """time's atoi: an optional sign, then decimal digits only."""
    body = s[1:] if s[:1] in ("-", "+") else s
    if not body or not all("0" <= c <= "9" for c in body):
        raise _Bad
    return -int(body) if s[:1] == "-" else int(body)


def parse(layout: str, value: str) -> str | None:
    """None when `value` parses with `layout` (RFC3339 or RFC3339_MICRO), else Go's error text."""
    elements = _ELEMENTS[layout]
    rest = value
    year = month = day = 0
    for i, (prefix, std) in enumerate(elements):
        if not rest.startswith(prefix):
            # skip() fails at the first byte that differs; the error names the whole prefix.
            return _error(layout, value, prefix, rest)
        rest = rest[len(prefix) :]
        hold = rest
        range_err = ""
        try:
            if std == "2006":
                if len(rest) < 4 or not _digit(rest, 0):
                    raise _Bad
                year, rest = _atoi(rest[:4]), rest[4:]
            elif std == "01":
                month, rest = _getnum(rest, True)
                if month <= 0 or month > 12:
                    range_err = "month"
            elif std == "02":
                day, rest = _getnum(rest, True)  # the day of the month is checked after the loop
            elif std == "15":
                hour, rest = _getnum(rest, False)
                if hour < 0 or hour >= 24:
                    range_err = "hour"
            elif std == "04":
                minute, rest = _getnum(rest, True)
                if minute < 0 or minute >= 60:
                    range_err = "minute"
            elif std == "05":
                second, rest = _getnum(rest, True)
                if second < 0 or second >= 60:
                    range_err = "second"
                elif len(rest) >= 2 and rest[0] in ".," and _digit(rest, 1) and layout == RFC3339:
                    # A fraction the layout does not have: any number of digits.
                    n = 2
                    while _digit(rest, n):
                        n += 1
                    range_err = _nanoseconds(rest, n)
                    rest = rest[n:]
            elif std == ".000000":
                if len(rest) < 7:
                    raise _Bad
                range_err = _nanoseconds(rest, 7)
                rest = rest[7:]
            else:  # Z07:00
                if rest[:1] == "Z":
                    rest = rest[1:]
                else:
                    if len(rest) < 6 or rest[3] != ":":
                        raise _Bad
                    sign, hours, minutes, rest = rest[0], rest[1:3], rest[4:6], rest[6:]
                    # As Go: a failed number counts 0, and an offset out of range wins over errBad.
                    bad = sign not in ("+", "-")
                    hr = mm = 0
                    try:
                        hr = _getnum(hours, True)[0]
                        mm = _getnum(minutes, True)[0]
                    except _Bad:
                        bad = True
                    if hr > 24:
                        range_err = "time zone offset hour"
                    if mm > 60:
                        range_err = "time zone offset minute"
                    if bad and not range_err:
                        raise _Bad
        except _Bad:
            return _error(layout, value, std, hold)
        if range_err:
            return _error(layout, value, std, rest, f": {range_err} out of range")
        if i == len(elements) - 1 and rest:
            return _error(layout, value, "", rest, f": extra text: {quote(rest)}")
    if day < 1 or day > _days_in(month, year):
        return _error(layout, value, "", "", ": day out of range")
    return None


def _nanoseconds(value: str, nbytes: int) -> str:
    """parseNanoseconds: '.' or ',' then digits (atoi: a sign passes and is then out of range)."""
    if value[0] not in ".,":
        raise _Bad
    if _atoi(value[1 : min(nbytes, 10)]) < 0:
        return "fractional second"
    return ""


def _days_in(month: int, year: int) -> int:
    if month == 2 and calendar.isleap(year):
        return 29
    return (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1] if 1 <= month <= 12 else 0
