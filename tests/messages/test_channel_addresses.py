"""Addresses of any channel: the prefix says the channel, the sender's channel decides what is valid."""

from __future__ import annotations

import re

import pytest

from dispatcher.core.directory import NumberInfo, SpecHook
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.rules import _check_channel, parse_address

WHATSAPP = NumberInfo(number="+15550000001", account_sid="AC" + "0" * 32, webhook_secret="s")
SMS = NumberInfo(
    number="+15550007777", account_sid="AC" + "0" * 32, webhook_secret="", spec=SpecHook("vonage-sms", "k")
)
LINE = NumberInfo(
    number="+15550003333",
    account_sid="AC" + "0" * 32,
    webhook_secret="",
    spec=SpecHook("line", "k", prefix="line:", recipient=re.compile(r"^[UCR][0-9a-f]{32}$")),
)
USER = "U" + "4af49806292f6e1a2b3c4d5e6f708192"


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("whatsapp:+15551234567", ("whatsapp:", "+15551234567")),
        ("+15551234567", ("", "+15551234567")),
        (f"line:{USER}", ("line:", USER)),
        ("messenger:+15551234567", ("messenger:", "+15551234567")),
    ],
)
def test_an_address_is_its_prefix_and_the_rest(value: str, parsed: tuple[str, str]) -> None:
    assert parse_address(value, field="To", code=21211) == parsed


@pytest.mark.parametrize(
    "value", ["whatsapp:U123", "U123", "line:U 1", "line:", "+1555", "whatsapp:+0551234567"]
)
def test_what_no_channel_could_carry_is_21211(value: str) -> None:
    with pytest.raises(TwilioError) as caught:
        parse_address(value, field="To", code=21211)
    assert caught.value.code == 21211


def check(info: NumberInfo, to: str, frm: str = "") -> None:
    _check_channel(info, parse_address(to, field="To", code=21211), frm, to)


def test_each_sender_takes_its_own_channel_addresses() -> None:
    check(WHATSAPP, "whatsapp:+15551234567", "whatsapp:")
    check(WHATSAPP, "+15551234567")  # WhatsApp numbers take bare numbers, as before
    check(SMS, "+15551234567")
    check(LINE, f"line:{USER}", "line:")


@pytest.mark.parametrize(
    ("info", "to", "frm", "code"),
    [
        (SMS, "whatsapp:+15551234567", "", 21910),
        (WHATSAPP, f"line:{USER}", "", 21910),
        (LINE, "whatsapp:+15551234567", "line:", 21910),
        (LINE, f"line:{USER}", "whatsapp:", 21910),
        (LINE, "line:U123", "line:", 21211),
        (LINE, "+15551234567", "line:", 21910),
    ],
)
def test_another_channels_address_is_refused(info: NumberInfo, to: str, frm: str, code: int) -> None:
    with pytest.raises(TwilioError) as caught:
        check(info, to, frm)
    assert caught.value.code == code
