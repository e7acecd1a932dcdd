"""Cloud API channel: request shape and every class of Graph error answer."""

from __future__ import annotations

import json
from typing import cast

import pytest
import trio
import trio.testing

from actors.outcome import Failed, Halt, Retry, Sent
from actors.transport import Response, Transport
from dispatcher.channels.cloud import CloudChannel, bucket_headroom, twilio_code
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store


def graph_error(code: int, details: str = "", status: int = 400, fbtrace: str = "Az8or2") -> Response:
    body = {
        "error": {
            "message": f"(#{code}) something",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "error_subcode": 2494055,
            "fbtrace_id": fbtrace,
        }
    }
    return Response(status, [], json.dumps(body).encode())


CHANNEL = CloudChannel("106540352242922", "v23.0")


def test_encodes_a_text_message_for_the_graph_api() -> None:
    record = MessageRecord(
        sid="SM" + "0" * 32,
        account_sid="AC" + "0" * 32,
        from_number="+15550001",
        to_number="+4915112345678",
        body="héllo",
    )
    _, target, body, _ = CHANNEL.encode(record)
    assert target == b"/v23.0/106540352242922/messages"
    assert json.loads(body) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "4915112345678",
        "type": "text",
        "text": {"body": "héllo", "preview_url": False},
    }


def test_success_answer_gives_the_wamid() -> None:
    body = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "4915112345678", "wa_id": "4915112345678"}],
        "messages": [{"id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}],
    }
    assert CHANNEL.classify(Response(200, [], json.dumps(body).encode())) == Sent(
        "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    )


@pytest.mark.parametrize("body", [b"", b"{", b'{"messages": []}', b'{"messaging_product": "whatsapp"}'])
def test_unreadable_success_is_an_ambiguous_retry(body: bytes) -> None:
    outcome = CHANNEL.classify(Response(200, [], body))
    assert isinstance(outcome, Retry) and outcome.ambiguous


@pytest.mark.parametrize("code", [190, 0])
def test_token_errors_halt_without_retrying(code: int) -> None:
    outcome = CHANNEL.classify(graph_error(code, "Error validating access token", status=401))
    assert isinstance(outcome, Halt)
    assert "Error validating access token" in outcome.reason and "Az8or2" in outcome.reason


def test_bare_401_halts() -> None:
    assert isinstance(CHANNEL.classify(Response(401, [], b"Unauthorized")), Halt)


@pytest.mark.parametrize("code", [130429, 4, 80007])
def test_throughput_errors_slow_the_number(code: int) -> None:
    outcome = CHANNEL.classify(graph_error(code, "Cloud API message throughput has been reached."))
    assert isinstance(outcome, Retry)
    assert outcome.rate_limited and not outcome.pair_limited and outcome.after is not None


def test_pair_rate_error_backs_off_that_recipient_only() -> None:
    outcome = CHANNEL.classify(graph_error(131056, "Message failed to send because there were too many"))
    assert isinstance(outcome, Retry) and outcome.pair_limited and outcome.after is None


@pytest.mark.parametrize("code", [1, 2, 131000, 131016, 131057])
def test_transient_codes_retry(code: int) -> None:
    outcome = CHANNEL.classify(graph_error(code, status=500 if code < 3 else 400))
    assert isinstance(outcome, Retry) and not outcome.rate_limited


def test_server_errors_without_a_graph_body_retry() -> None:
    assert isinstance(CHANNEL.classify(Response(502, [], b"<html>bad gateway</html>")), Retry)
    limited = CHANNEL.classify(Response(429, [(b"retry-after", b"3")], b""))
    assert isinstance(limited, Retry) and limited.after == 3.0 and limited.rate_limited


@pytest.mark.parametrize(
    ("code", "twilio"),
    [
        (131047, 63016),
        (131026, 63024),
        (132000, 63028),
        (132001, 63027),
        (131048, 63018),
        (131049, 63049),
        (131021, 63031),
        (131053, 63019),
        (100, 63021),
        (368, 63005),
        (999999, 30008),
    ],
)
def test_permanent_errors_fail_with_the_twilio_code(code: int, twilio: int) -> None:
    outcome = CHANNEL.classify(graph_error(code, f"details of {code}"))
    assert outcome == Failed(twilio, f"details of {code} (fbtrace_id Az8or2)")
    assert twilio_code(code) == twilio


def test_error_without_details_uses_the_message() -> None:
    body = json.dumps({"error": {"code": 131051, "message": "Unsupported message type"}}).encode()
    assert CHANNEL.classify(Response(400, [], body)) == Failed(63021, "Unsupported message type")


def test_non_graph_4xx_fails_generically() -> None:
    outcome = CHANNEL.classify(Response(404, [], b"not found"))
    assert isinstance(outcome, Failed) and outcome.error_code == 30008


@pytest.mark.parametrize(("throughput", "slots"), [(80.0, 4), (1000.0, 50), (20.0, 1), (0.5, 1)])
def test_bucket_keeps_50_ms_of_slots_back_for_jitter(throughput: float, slots: int) -> None:
    assert bucket_headroom(throughput) == slots


async def test_a_cloud_number_bursts_less_its_jitter_headroom(
    autojump_clock: trio.testing.MockClock, store: Store
) -> None:
    from dispatcher.config import CloudConfig, NumberConfig, Secret
    from dispatcher.service.numbers import build_actor

    cloud = CloudConfig(
        phone_number_id="1",
        access_token=Secret(value="t"),
        app_secret=Secret(value="test-app-secret-0123456789"),
        verify_token=Secret(value="test-verify-token-0123456789"),
        throughput=80.0,
        throughput_burst=80,
    )
    num = NumberConfig(number="+15550000001", account="AC" + "0" * 32, channel="cloud", cloud=cloud)
    # A real store: the actor is built with what Meta last said of the number (none here).
    actor = build_actor(num, cast(Transport, None), store=store, wall=SystemWallClock())
    released = 0
    with trio.move_on_after(0.001):
        while True:
            await actor.bucket.acquire()
            released += 1
    assert released == 80 - 4  # 4 slots (50 ms at 80/s) kept back rather than one
