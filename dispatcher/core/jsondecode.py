"""JSON from outside: every malformed input is a ``msgspec.DecodeError``, never another exception.

msgspec raises two other errors for hostile bodies: ``RecursionError`` when
arrays or objects nest deeper than the interpreter's recursion limit allows
(~1,000 levels, fewer the deeper the calling stack), and ``UnicodeDecodeError``
for a string it reads that is not valid UTF-8 (the bytes of a field it skips are
not checked). Both are the sender's error, to be answered like any other
malformed JSON (a 400), not a bug of ours (a 500 with a traceback).
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

T = TypeVar("T")


def decode(decoder: msgspec.json.Decoder[T], data: bytes | msgspec.Raw) -> T:
    """``decoder.decode(data)``; raises ``msgspec.DecodeError`` (or its ``ValidationError``) only."""
    try:
        return decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("JSON is malformed: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"JSON is malformed: a string is not valid UTF-8 ({exc.reason})") from None
