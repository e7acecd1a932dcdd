"""A spec channel's send requests and the reading of their answers (Vonage SMS, and specs written here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qsl

import pytest

from actors.channel import Unsendable
from actors.outcome import Failed, Halt, Reauth, Retry, Sent
from actors.transport import Response
from dispatcher.channels.spec_channel import SpecChannel, sid_uuid, webhook_path
from dispatcher.core.channelspec.load import load_registry, loads
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord, TemplateSend

SID = "SM0123456789abcdef0123456789abcdef"


class FixedWall(WallClock):
    def now(self) -> float:
        return 1_700_000_000.0


def record(**fields: object) -> MessageRecord:
    base: dict[str, object] = {
        "sid": SID,
        "account_sid": "AC" + "0" * 32,
        "from_number": "+15550007777",
        "to_number": "+447700900123",
        "body": "héllo & goodbye",
    }
    return MessageRecord(**{**base, **fields})  # type: ignore[arg-type]


def vonage(
    status_url: str | None = "https://gw.example.com/webhooks/channel/vonage-sms/15550007777/s",
) -> SpecChannel:
    loaded = load_registry().get("vonage-sms")
    assert loaded is not None
    settings = {"api_key": "KEY", "api_secret": "SECRET", "webhook_secret": "s"}
    return SpecChannel(
        loaded, settings=settings, number="+15550007777", status_url=status_url, wall=FixedWall(), login=False
    )


def answer(status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, headers or [], json.dumps(body).encode())


def test_vonage_text_is_one_form_post_with_the_settings_folded_in() -> None:
    method, target, body, head = vonage().encode(record())
    assert (method, target) == (b"POST", b"/sms/json")
    assert head == [(b"content-type", b"application/x-www-form-urlencoded")]
    assert dict(parse_qsl(body.decode())) == {
        "api_key": "KEY",
        "api_secret": "SECRET",
        "from": "15550007777",
        "to": "447700900123",
        "text": "héllo & goodbye",
        "type": "unicode",
        "status-report-req": "1",
        "callback": "https://gw.example.com/webhooks/channel/vonage-sms/15550007777/s",
        "client-ref": SID,
    }


def test_an_optional_slot_without_a_value_leaves_its_field_out() -> None:
    _, _, body, _ = vonage(status_url=None).encode(record())
    assert "callback" not in dict(parse_qsl(body.decode()))


def test_vonage_answers_are_classified_by_its_status_codes() -> None:
    channel = vonage()
    ok = {
        "message-count": "1",
        "messages": [{"to": "447700900123", "message-id": "0A0000000123ABCD1", "status": "0"}],
    }
    assert channel.classify(answer(200, ok)) == Sent("0A0000000123ABCD1")

    def refused(code: str, text: str) -> object:
        return channel.classify(answer(200, {"messages": [{"status": code, "error-text": text}]}))

    throttled = refused("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry")
    assert isinstance(throttled, Retry) and throttled.rate_limited and throttled.after == 1.0
    assert refused("3", "Invalid to number") == Failed(21211, "Invalid to number (code 3)")
    assert isinstance(refused("4", "Bad Credentials"), Halt)
    transient = refused("5", "Internal Error")
    assert isinstance(transient, Retry) and not transient.rate_limited
    unknown = refused("77", "Something new")
    assert (
        isinstance(unknown, Retry)
        and unknown.cap == 3
        and unknown.gives_up_with == (30008, "Something new (code 77)")
    )
    assert isinstance(channel.classify(Response(502, [(b"retry-after", b"7")], b"")), Retry)
    assert channel.classify(Response(502, [(b"retry-after", b"7")], b"")).after == 7.0  # type: ignore[union-attr]
    unreadable = channel.classify(Response(200, [], b"<html>"))
    assert isinstance(unreadable, Retry)


def test_media_and_templates_are_refused_where_the_spec_has_no_request() -> None:
    channel = vonage()
    with pytest.raises(Unsendable, match="takes no media messages") as caught:
        channel.encode(record(media_urls=["https://example.com/a.jpg"], parts=1))
    assert caught.value.code == 63021
    with pytest.raises(Unsendable, match="takes no template messages"):
        channel.encode(record(template=TemplateSend("HX" + "0" * 32, "", "hello", "en", ["Ana"])))


ACME = """
kind = "acme"
prefix = "acme:"
address = "id"
recipient_pattern = "^U[0-9a-f]{8}$"
[settings.token]
secret = true
[settings.signing_key]
secret = true
[auth]
type = "hmac"
header = "X-Acme-Signature"
algorithm = "sha256"
encoding = "base64"
key = "{setting.signing_key}"
message = "{method} {path} {timestamp} {body}"
timestamp_header = "X-Acme-Time"
[send]
path = "/v1/push"
headers = { X-Retry-Key = "{sid_uuid}" }
[send.text]
body = { to = "{to}", messages = [{ type = "text", text = "{body}" }] }
[send.media]
body = { to = "{to}", messages = [{ type = "{media_kind}", url = "{media_url}", caption = "{caption?}" }] }
kinds = { image = "picture", document = "file" }
[send.template]
path = "/v1/templates/{template_name}"
[send.template.body]
to = "{to}"
language = "{template_language}"
values = "{template_values}"
vars = "{template_values_json}"
[answer]
id_path = "sent[0].id"
error_message_path = "message"
duplicate_id_header = "X-Accepted-Id"
[[errors]]
status = [409]
class = "duplicate"
[[errors]]
status = [400]
contains = "not a friend"
class = "permanent"
twilio_code = 63024
"""


def acme() -> SpecChannel:
    loaded = loads(ACME, "acme.toml")
    settings = {"token": "T", "signing_key": "K3Y"}
    return SpecChannel(
        loaded, settings=settings, number="+15550001234", status_url=None, wall=FixedWall(), login=False
    )


def test_a_json_spec_fills_nested_bodies_per_kind() -> None:
    channel = acme()
    to = "Uabcdef01"
    _, _, body, head = channel.encode(record(to_number=to, body="hi"))
    assert json.loads(body) == {"to": to, "messages": [{"type": "text", "text": "hi"}]}
    assert (b"x-retry-key", sid_uuid(SID).encode()) in head
    assert sid_uuid(SID) == "01234567-89ab-cdef-0123-456789abcdef"
    _, _, media, _ = channel.encode(record(to_number=to, body="", media_urls=["https://example.com/x.pdf"]))
    assert json.loads(media)["messages"] == [{"type": "file", "url": "https://example.com/x.pdf"}]
    with pytest.raises(Unsendable, match="takes no audio media"):
        channel.encode(record(to_number=to, body="", media_urls=["https://example.com/x.mp3"]))
    tpl = record(
        to_number=to,
        body="",
        template=TemplateSend("HX" + "1" * 32, "", "order_update", "pt_BR", ["Ana", "42"]),
    )
    _, target, body, _ = channel.encode(tpl)
    assert target == b"/v1/templates/order_update"
    assert json.loads(body) == {
        "to": to,
        "language": "pt_BR",
        "values": ["Ana", "42"],
        "vars": '{"1":"Ana","2":"42"}',
    }


def test_hmac_signing_covers_method_path_time_and_body() -> None:
    channel = acme()
    method, target, body, head = channel.encode(record(to_number="Uabcdef01"))
    headers = dict(channel.authorize(head, method, target, body, b""))
    message = f"POST /v1/push 1700000000 {body.decode()}".encode()
    expected = base64.b64encode(hmac.new(b"K3Y", message, hashlib.sha256).digest())
    assert headers[b"x-acme-signature"] == expected
    assert headers[b"x-acme-time"] == b"1700000000"
    assert b"authorization" not in headers


def test_a_duplicate_is_sent_with_the_id_the_channel_accepted() -> None:
    channel = acme()
    assert channel.classify(Response(409, [(b"x-accepted-id", b"req-77")], b'{"message":"dup"}')) == Sent(
        "req-77"
    )
    refused = channel.classify(answer(400, {"message": "The user is not a friend"}))
    assert refused == Failed(63024, "The user is not a friend")
    assert channel.classify(answer(400, {"message": "bad"})) == Failed(30008, "bad")
    assert isinstance(channel.classify(answer(401, {"message": "who?"})), Halt)


def test_a_login_channel_asks_its_credentials_to_renew() -> None:
    loaded = loads(ACME, "acme.toml")
    channel = SpecChannel(
        loaded,
        settings={"token": "T", "signing_key": "K"},
        number="+15550001234",
        status_url=None,
        wall=FixedWall(),
        login=True,
    )
    assert channel.classify(answer(401, {"message": "expired"})) == Reauth()


def test_the_webhook_path_carries_the_secret_for_path_signed_specs() -> None:
    loaded = load_registry().get("vonage-sms")
    assert loaded is not None
    path = webhook_path(loaded, {"webhook_secret": "a/b c"}, "+15550007777")
    assert path == "/webhooks/channel/vonage-sms/15550007777/a%2Fb%20c"


def cloud_spec() -> SpecChannel:
    loaded = load_registry().get("whatsapp-cloud")
    assert loaded is not None
    settings = {
        "phone_number_id": "106540352242922",
        "access_token": "EAA",
        "app_secret": "s",
        "api_version": "v23.0",
    }
    return SpecChannel(
        loaded, settings=settings, number="+15550001", status_url=None, wall=FixedWall(), login=False
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"body": "héllo"},
        {"body": "see this", "media_urls": ["https://example.com/cat.jpg"]},
        {"body": "", "media_urls": ["https://example.com/report.pdf"]},
        {"body": "", "template": TemplateSend("HX" + "1" * 32, "", "order_update", "pt_BR", ["Ana", "42"])},
        {"body": "", "template": TemplateSend("HX" + "2" * 32, "", "hello_world", "en_US", [])},
    ],
)
def test_the_cloud_spec_sends_what_the_hand_written_channel_sends(fields: dict[str, object]) -> None:
    from dispatcher.channels.cloud import CloudChannel

    message = record(to_number="+4915112345678", **fields)
    _, hand_target, hand_body, _ = CloudChannel("106540352242922", "v23.0").encode(message)
    method, target, body, head = cloud_spec().encode(message)
    assert (method, target) == (b"POST", hand_target)
    assert json.loads(body) == json.loads(hand_body)
    assert (
        dict(cloud_spec().authorize(head, method, target, body, b"Bearer EAA"))[b"authorization"]
        == b"Bearer EAA"
    )


QUERY_AND_BASIC = """
kind = "acme-{auth}"
[settings.key]
secret = true
[auth]
type = "{auth}"
name = "api_key"
value = "{{setting.key}}"
username = "user-1"
password = "{{setting.key}}"
[send]
path = "/send?route=sms"
[send.text]
body = {{ to = "{{to}}", text = "{{body}}" }}
[answer]
id_path = "id"
"""


def test_query_auth_goes_on_the_target_and_basic_in_authorization() -> None:
    def channel(auth: str) -> SpecChannel:
        text = QUERY_AND_BASIC.format(auth=auth)
        if auth == "query":
            text = text.replace('username = "user-1"\npassword = "{setting.key}"\n', "")
        else:
            text = text.replace('name = "api_key"\nvalue = "{setting.key}"\n', "")
        loaded = loads(text, f"{auth}.toml")
        return SpecChannel(
            loaded,
            settings={"key": "s3cr3t/+="},
            number="+15550001",
            status_url=None,
            wall=FixedWall(),
            login=False,
        )

    method, target, body, head = channel("query").encode(record())
    assert target == b"/send?route=sms&api_key=s3cr3t%2F%2B%3D"
    assert channel("query").authorize(head, method, target, body, b"") == head  # nothing in the headers
    headers = dict(channel("basic").authorize(head, method, target, body, b"Basic dXNlcg=="))
    assert headers[b"authorization"] == b"Basic dXNlcg=="
