"""Request parameters of the Twilio routes: form-encoded or JSON bodies, one shape.

Twilio's API takes ``application/x-www-form-urlencoded`` bodies with repeatable
keys (``MediaUrl``); many clients would rather post JSON. Both decode into the
same ``Params`` (name -> values, in order), so create and update validate one
thing whatever the body was, and every malformed body is a Twilio 400, never a
500.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl

import msgspec

from dispatcher.core import jsondecode
from dispatcher.core.twilio import TwilioError

Params = dict[str, list[str]]

INVALID_PARAMETER: Final = 20001
MAX_FIELDS: Final = 1000  # a form or JSON object with more keys is refused, not parsed

_json_decoder: Final = msgspec.json.Decoder(dict[str, Any])
_json_encoder: Final = msgspec.json.Encoder()


def invalid(message: str) -> TwilioError:
    return TwilioError(400, INVALID_PARAMETER, message)


def parse_form(body: bytes) -> Params:
    """``a=1&b=2&a=3`` -> ``{"a": ["1", "3"], "b": ["2"]}`` (blank values kept: ``Body=`` redacts)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise invalid("The request body is not valid UTF-8 form data.") from None
    except ValueError:
        raise invalid(f"The request has more than {MAX_FIELDS} parameters.") from None
    params: Params = {}
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def parse_json(body: bytes) -> Params:
    """A JSON object of parameters: strings, numbers, booleans, lists of those; null is absent.

    An object value (e.g. ``ContentVariables``) is passed on as its JSON text,
    which is what the form API expects for it.
    """
    try:
        obj = jsondecode.decode(_json_decoder, body)
    except msgspec.ValidationError:
        raise invalid("The JSON request body must be an object of parameters.") from None
    except msgspec.DecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}") from None
    if len(obj) > MAX_FIELDS:
        raise invalid(f"The request has more than {MAX_FIELDS} parameters.")
    params: Params = {}
    for key, value in obj.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        params[key] = [_scalar(key, item) for item in items]
    return params


def _scalar(key: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return _json_encoder.encode(value).decode()
    raise invalid(f"The '{key}' parameter must be a string or a list of strings.")


def parse_body(content_type: str | None, body: bytes) -> Params:
    """Decode by ``Content-Type``; no type (curl -d without -H) is taken as a form."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in ("", "application/x-www-form-urlencoded"):
        return parse_form(body)
    if mime == "application/json" or mime.endswith("+json"):
        return parse_json(body)
    raise TwilioError(
        415,
        INVALID_PARAMETER,
        f"Unsupported Content-Type {mime!r}: send application/x-www-form-urlencoded or application/json.",
    )


def first(params: Params, name: str) -> str | None:
    """The parameter's value (the first if it was repeated), or None if absent."""
    values = params.get(name)
    return values[0] if values else None
