"""structlog set-up: JSON lines on stdout (journald), number and sid bound by the actors."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

_encoder = msgspec.json.Encoder(enc_hook=repr)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _serialize(event: dict[str, Any], **_: Any) -> bytes:
    # structlog passes default=...; msgspec's encode takes no such keyword.
    return _encoder.encode(event)


def configure(level: str = "info", *, cache: bool = True) -> None:
    structlog.configure(
        cache_logger_on_first_use=cache,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
    )
    # hypercorn and httpx log through the stdlib: keep their warnings, as plain lines on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
