"""A phone number's country calling code (ITU-T E.164 assignments), for grouping recipients.

The codes are prefix-free: 1 and 7 are one digit; the two-digit codes are listed;
every other code has three digits. ``+1`` (NANP) and ``+7`` stay whole zones.
"""

from __future__ import annotations

from typing import Final

TWO_DIGIT: Final = frozenset(
    {
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    }
)  # fmt: skip


def calling_code(number: str) -> str:
    """``+447700900123`` -> ``+44``; ``+15550001111`` -> ``+1``; not E.164 -> ``?``."""
    digits = number[1:] if number.startswith("+") else number
    if not digits[:1].isdigit() or digits[0] == "0":
        return "?"
    if digits[0] in "17":
        return "+" + digits[0]
    if digits[:2] in TWO_DIGIT:
        return "+" + digits[:2]
    return "+" + digits[:3]
