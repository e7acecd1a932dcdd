"""Callback wire format: Twilio params, X-Twilio-Signature (checked by twilio-python), TwiML, SSRF guard."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from dispatcher.core import callbacks
from dispatcher.core.events import InboundEvent, MediaItem
from dispatcher.core.models import MessageRecord, StoredMedia
from dispatcher.core.ssrf import RefusedURLError, ResolveError, UrlGuard, check_syntax
from dispatcher.webhooks import twiml

ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "sandbox-auth-token"


def outbound(**kw: object) -> MessageRecord:
    fields: dict[str, object] = {
        "sid": "SM" + "a" * 32,
        "account_sid": ACCOUNT,
        "from_number": "+15550000001",
        "to_number": "+15551234567",
        "body": "hi",
        "status": "delivered",
    }
    fields.update(kw)
    return MessageRecord(**fields)  # type: ignore[arg-type]


def test_status_params_follow_twilio() -> None:
    params = dict(
        callbacks.status_params(outbound(status="failed", error_code=63016, error_message="window"))
    )
    assert params["MessageSid"] == params["SmsSid"] == "SM" + "a" * 32
    assert params["MessageStatus"] == params["SmsStatus"] == "failed"
    assert params["From"] == "whatsapp:+15550000001" and params["To"] == "whatsapp:+15551234567"
    assert params["ChannelToAddress"] == "+15551234567" and params["AccountSid"] == ACCOUNT
    assert params["ErrorCode"] == "63016" and params["ErrorMessage"] == "window"
    assert "ErrorCode" not in dict(callbacks.status_params(outbound()))


def test_inbound_params_carry_media_location_and_buttons() -> None:
    record = MessageRecord(
        sid="MM" + "b" * 32,
        account_sid=ACCOUNT,
        from_number="+15551234567",
        to_number="+15550000001",
        body="look",
        direction="inbound",
        status="received",
        num_media=1,
        media=[StoredMedia("ME" + "c" * 32, "uuid-1", "image/jpeg")],
    )
    event = InboundEvent(
        channel_id="ABGG1",
        sender="+15551234567",
        kind="image",
        timestamp=1.0,
        body="look",
        profile_name="Jane",
        media=[MediaItem("uuid-1", "image/jpeg")],
        button_text="Yes",
        button_payload="Y",
    )
    params = dict(callbacks.inbound_params(record, event, ["https://gw.example/m0"], "SM" + "d" * 32))
    assert params["NumMedia"] == "1" and params["MediaUrl0"] == "https://gw.example/m0"
    assert params["MediaContentType0"] == "image/jpeg" and params["WaId"] == "15551234567"
    assert params["ProfileName"] == "Jane" and params["SmsStatus"] == "received"
    assert (params["ButtonText"], params["ButtonPayload"]) == ("Yes", "Y")
    assert params["OriginalRepliedMessageSid"] == "SM" + "d" * 32
    assert "Latitude" not in params


@pytest.mark.parametrize(
    "url", ["https://example.com/cb", "http://127.0.0.1:8080/cb?x=1&y=%20z", "https://h.example:8443/a/b"]
)
def test_signature_validates_with_twilio_request_validator(url: str) -> None:
    params = [("Body", "héllo & more"), ("MediaUrl0", "a"), ("From", "whatsapp:+1"), ("Body2", "")]
    signature = callbacks.signature(TOKEN, url, params)
    validator = RequestValidator(TOKEN)
    assert validator.validate(url, dict(params), signature)
    assert not RequestValidator("other-token").validate(url, dict(params), signature)
    assert not validator.validate(url, {**dict(params), "Body": "tampered"}, signature)


def test_origin_is_the_isolation_unit() -> None:
    assert callbacks.origin("https://Example.com/cb?x") == "https://example.com:443"
    assert callbacks.origin("http://example.com/cb") == "http://example.com:80"
    assert callbacks.origin("http://example.com:8080/") == "http://example.com:8080"


# -- TwiML ------------------------------------------------------------------------


def test_twiml_media_children_become_the_reply_media() -> None:
    answer = (
        b"<Response><Message><Body>Here it is</Body><Media>https://a.example/x.jpg</Media>"
        b"<Media> https://a.example/y.pdf </Media><Media></Media></Message>"
        b"<Message><Media>https://a.example/only.png</Media></Message></Response>"
    )
    assert twiml.replies(answer) == [
        twiml.Reply("Here it is", media=("https://a.example/x.jpg", "https://a.example/y.pdf")),
        twiml.Reply("", media=("https://a.example/only.png",)),
    ]


def test_twiml_message_forms() -> None:
    assert twiml.replies(b"") == []
    assert twiml.replies(b"<Response/>") == []
    assert twiml.replies(b'<?xml version="1.0"?><Response><Message>Thanks!</Message></Response>') == [
        twiml.Reply("Thanks!")
    ]
    both = b"<Response><Message><Body>One</Body></Message><Message to='whatsapp:+1'>Two</Message></Response>"
    assert twiml.replies(both) == [twiml.Reply("One"), twiml.Reply("Two", to="whatsapp:+1")]


@pytest.mark.parametrize(
    "body",
    [
        b"<Response><Message>unclosed",
        b"<Other><Message>x</Message></Other>",
        b'<!DOCTYPE lolz [<!ENTITY lol "lol">]><Response><Message>&lol;</Message></Response>',
        b"<Response>" + b"x" * (twiml.MAX_TWIML + 1) + b"</Response>",
    ],
)
def test_hostile_or_invalid_twiml_is_refused(body: bytes) -> None:
    with pytest.raises(twiml.TwimlError):
        twiml.replies(body)


# -- SSRF -------------------------------------------------------------------------


def fixed(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00:ec2::254",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
async def test_private_addresses_are_refused(address: str) -> None:
    guard = UrlGuard(resolver=fixed(address))
    with pytest.raises(RefusedURLError):
        await guard.resolve("https://customer.example/cb")


async def test_one_bad_address_among_good_ones_is_refused() -> None:
    guard = UrlGuard(resolver=fixed("93.184.216.34", "10.0.0.1"))
    with pytest.raises(RefusedURLError):
        await guard.resolve("https://rebind.example/cb")


async def test_public_and_allow_listed_addresses_pass_and_are_pinned() -> None:
    resolved = await UrlGuard(resolver=fixed("93.184.216.34")).resolve("https://customer.example:8443/cb")
    assert (resolved.host, resolved.port, resolved.ip) == ("customer.example", 8443, "93.184.216.34")
    allowed = await UrlGuard(["127.0.0.1/32"]).resolve("http://127.0.0.1:9/cb")
    assert allowed.ip == "127.0.0.1"
    with pytest.raises(RefusedURLError):
        await UrlGuard(["127.0.0.1/32"]).resolve("http://127.0.0.2/cb")


async def test_unresolvable_names_are_transient() -> None:
    async def fail(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(ResolveError):
        await UrlGuard(resolver=fail).resolve("https://nowhere.example/cb")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "/relative",
        "https://",
        "http://exa mple.com/",
        "http://h:99999/",
        "javascript:x",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(RefusedURLError):
        check_syntax(url)
