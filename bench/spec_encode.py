"""Per message, the channel's own work: encode a send, add its credentials, read its answer.

The hand-written Cloud channel (``channels/cloud.py``) against the ``whatsapp-cloud`` spec compiled
by ``channels/spec_channel.py``, and the LINE and Vonage specs beside them: the same text message,
the same success answer, best of ``--repeat`` timings of ``--messages`` calls each. What ``bench.e2e
--channel cloud`` vs ``--channel cloud-spec`` measures end to end, without the rest of the daemon.

Usage::

    .venv/bin/python -m bench.spec_encode [--messages 100000] [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from actors.channel import Channel
from actors.transport import Response
from dispatcher.channels.cloud import CloudChannel
from dispatcher.channels.spec_channel import SpecChannel
from dispatcher.core.channelspec.load import load_registry
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.models import MessageRecord

SETTINGS = {
    "whatsapp-cloud": {
        "phone_number_id": "106540352242922",
        "access_token": "t",
        "app_secret": "s",
        "api_version": "v23.0",
    },
    "line": {"channel_id": "1656789012", "channel_secret": "s", "bot_user_id": ""},
    "vonage-sms": {"api_key": "k", "api_secret": "s", "webhook_secret": "w"},
}
ANSWERS = {
    "cloud": b'{"messaging_product":"whatsapp",'
    b'"contacts":[{"input":"4915112345678","wa_id":"4915112345678"}],'
    b'"messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}',
    "line": b'{"sentMessages":[{"id":"461230966842064897","quoteToken":"IStG5h1Tz7b"}]}',
    "vonage-sms": b'{"message-count":"1","messages":[{"to":"447700900000","message-id":"0A0000000123ABCD1",'
    b'"status":"0","remaining-balance":"3.14159265","message-price":"0.03330000","network":"12345"}]}',
}


def record(to: str) -> MessageRecord:
    return MessageRecord(
        sid="SM0123456789abcdef0123456789abcdef",
        account_sid="AC" + "0" * 32,
        from_number="+15550001111",
        to_number=to,
        body="Your code is 123456. It expires in 10 minutes.",
    )


def per_message_ns(
    channel: Channel, message: MessageRecord, answer: bytes, messages: int, repeat: int
) -> float:
    resp = Response(200, [], answer)
    encode, authorize, classify = channel.encode, channel.authorize, channel.classify
    auth = b"Bearer EAAsystemusertoken"

    def run() -> None:
        for _ in range(messages):
            method, target, body, head = encode(message, 0)
            authorize(head, method, target, body, auth)
            classify(resp)

    return min(_timed(run) for _ in range(repeat)) / messages * 1e9


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()
    registry = load_registry()
    wall = SystemWallClock()

    def spec(kind: str) -> SpecChannel:
        loaded = registry.get(kind)
        assert loaded is not None
        return SpecChannel(
            loaded, settings=SETTINGS[kind], number="+15550001111", status_url=None, wall=wall, login=False
        )

    phone, line_user = record("+4915112345678"), record("U4af49806292f6e1a2b3c4d5e6f708192")
    figures = {
        "cloud_hand_written_ns": per_message_ns(
            CloudChannel("106540352242922", "v23.0"), phone, ANSWERS["cloud"], args.messages, args.repeat
        ),
        "cloud_spec_ns": per_message_ns(
            spec("whatsapp-cloud"), phone, ANSWERS["cloud"], args.messages, args.repeat
        ),
        "line_spec_ns": per_message_ns(spec("line"), line_user, ANSWERS["line"], args.messages, args.repeat),
        "vonage_spec_ns": per_message_ns(
            spec("vonage-sms"), phone, ANSWERS["vonage-sms"], args.messages, args.repeat
        ),
    }
    result = {k: round(v) for k, v in figures.items()}
    result["cloud_spec_vs_hand_written"] = round(
        figures["cloud_spec_ns"] / figures["cloud_hand_written_ns"], 2
    )
    for key, value in result.items():
        print(f"{key:>28}: {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
