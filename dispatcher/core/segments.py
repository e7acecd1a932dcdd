"""Split a long text body into WhatsApp-sized segments on word boundaries.

WhatsApp text messages carry at most 4096 characters. A longer body goes out
as several text messages, in order; each cut is made at the last whitespace
that fits, so words stay whole. A single "word" longer than the limit (a long
URL, say) is cut hard at the limit, since it cannot fit anywhere.

Pure and deterministic: the actor re-derives segment ``i`` from the stored
body, so the outbox only records the index.
"""

from __future__ import annotations

from typing import Final

TEXT_LIMIT: Final = 4096  # WhatsApp's maximum text.body length


def split(body: str, limit: int = TEXT_LIMIT) -> list[str]:
    """The segments of ``body``; one segment (the body itself) when it fits.

    Whitespace at a cut is dropped; no segment is empty or longer than ``limit``.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(body) <= limit:
        return [body]
    segments: list[str] = []
    rest = body
    while len(rest) > limit:
        window = rest[: limit + 1]  # a space right after the limit is a clean cut too
        cut = _last_space(window)
        if cut <= 0:
            head, rest = rest[:limit], rest[limit:]
        else:
            head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head:
            segments.append(head)
    if rest:
        segments.append(rest)
    return segments


def _last_space(text: str) -> int:
    for i in range(len(text) - 1, -1, -1):
        if text[i].isspace():
            return i
    return -1


def count(body: str, limit: int = TEXT_LIMIT) -> int:
    """How many segments ``body`` needs (without building them when it fits)."""
    return 1 if len(body) <= limit else len(split(body, limit))
