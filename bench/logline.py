"""What one log line costs through the daemon's structlog pipeline, with and without URL redaction.

The actor logs ``message.sent`` for every message at info level, so the
pipeline (``dispatcher.core.logs``) is on the delivery hot path of a production
daemon (the delivery benches run at warning level and do not see it). This
renders that event, and a callback failure carrying a URL, to ``/dev/null``:
the configured pipeline, then the same without ``redact_urls``.

Usage::

    .venv/bin/python -m bench.logline [--events 200000]

Prints one JSON line: microseconds per event, best of 5 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import timeit

import structlog

from dispatcher.core import logs


def _pipeline(redacting: bool) -> structlog.typing.FilteringBoundLogger:
    logs.configure("info", cache=True)
    processors = structlog.get_config()["processors"]
    if not redacting:
        processors = [p for p in processors if p is not logs.redact_urls]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.BytesLoggerFactory(open(os.devnull, "wb")),  # noqa: SIM115 - lives for the run
    )
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(
        number="+15550000001", sid="SM0123456789abcdef0123456789abcdef"
    )
    return logger


def _per_event_us(redacting: bool, events: int, with_url: bool) -> float:
    log = _pipeline(redacting)
    if with_url:

        def emit() -> None:
            log.info(
                "callback.failed",
                kind="status",
                url="https://shop:pw@cb.example.com/status?sig=1",
                status=503,
            )
    else:

        def emit() -> None:
            log.info("message.sent", wamid="gBGGFlB5YjZ1AgkY_2E0NzJhZjE0", status="sent", attempts=1)

    best = min(timeit.repeat(emit, number=events, repeat=5))
    return round(best / events * 1e6, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    result = {
        "message_sent_us": _per_event_us(True, args.events, with_url=False),
        "message_sent_unredacted_us": _per_event_us(False, args.events, with_url=False),
        "url_event_us": _per_event_us(True, args.events, with_url=True),
        "url_event_unredacted_us": _per_event_us(False, args.events, with_url=True),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
