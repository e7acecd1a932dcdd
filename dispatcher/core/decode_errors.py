"""msgspec's validation messages, said the way a config or spec author reads them: key first.

msgspec says ``Object contains unknown field `x` - at `$.numbers[0]```; an operator editing a TOML
file wants ``numbers[0].x: unknown key``. The config and the channel specs both decode TOML into
msgspec Structs with unknown fields refused, so both report through this one function.
"""

from __future__ import annotations

import re

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


def key_first(message: str) -> str:
    """``... - at `$.send.text``` -> ``send.text: ...``; an unknown field -> ``key: unknown key``."""
    match = _AT.match(message)
    if not match:
        return message
    path = (match["path"] or "").lstrip(".")
    what = match["what"]
    unknown = _UNKNOWN.match(what)
    if unknown:
        key = f"{path}.{unknown['field']}" if path else unknown["field"]
        return f"{key}: unknown key"
    return f"{path}: {what}" if path else what
