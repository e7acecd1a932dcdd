"""structlog set-up: JSON lines on stdout (journald), number and sid bound by the actors.

No secret reaches a log line through a URL: every string logged (values, lists
and dicts of them, formatted tracebacks, the stdlib's lines from hypercorn and
httpx) has the credentials and the query of each URL in it replaced by ``***``
(``https://user:pass@host/cb?token=x`` -> ``https://***@host/cb?***``), and the
secret in an On-Prem webhook path (``/webhooks/onprem/{digits}/{secret}``) too.
A value without ``://`` or that path costs two substring checks.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import msgspec
import structlog

_encoder = msgspec.json.Encoder(enc_hook=repr)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _serialize(event: dict[str, Any], **_: Any) -> bytes:
    # structlog passes default=...; msgspec's encode takes no such keyword.
    return _encoder.encode(event)


# scheme://[userinfo@]rest[?query][#fragment], ending at whitespace: a quote or bracket after a
# URL (repr, JSON) goes with it, so a quote inside a password or query cannot end the match early.
_URL: Final = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*@)?(?P<rest>[^?#\s]*)(?P<tail>[?#]\S*)?"
)
_HOOK_PATH: Final = "/webhooks/onprem/"
_HOOK_SECRET: Final = re.compile(r"(/webhooks/onprem/[^/?#\s]*/)[^/?#\s]+")
REDACTED: Final = "***"


def _redact_url(match: re.Match[str]) -> str:
    userinfo = f"{REDACTED}@" if match["userinfo"] else ""
    tail = f"{match['tail'][0]}{REDACTED}" if match["tail"] else ""
    return f"{match['scheme']}{userinfo}{match['rest']}{tail}"


def redact(text: str) -> str:
    """``text`` with URL credentials, queries and fragments, and webhook path secrets, replaced."""
    if "://" in text:
        text = _URL.sub(_redact_url, text)
    if _HOOK_PATH in text:
        text = _HOOK_SECRET.sub(rf"\1{REDACTED}", text)
    return text


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value) if "://" in value or _HOOK_PATH in value else value
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


def redact_urls(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``redact`` every string of the event (after ``format_exc_info``)."""
    for key, value in event.items():
        if type(value) is str:
            if "://" in value or _HOOK_PATH in value:
                event[key] = redact(value)
        elif isinstance(value, (list, tuple, dict)):
            event[key] = _redact_value(value)
    return event


class RedactingFilter(logging.Filter):
    """The same for the stdlib's records (hypercorn, httpx): the message is formatted, then redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure(level: str = "info", *, cache: bool = True) -> None:
    structlog.configure(
        cache_logger_on_first_use=cache,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_urls,
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
    )
    # hypercorn and httpx log through the stdlib: keep their warnings, as plain lines on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
