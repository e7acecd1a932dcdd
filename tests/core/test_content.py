"""Pure content rules: segmentation, media kinds, the parts plan, content validation codes."""

from __future__ import annotations

import msgspec
import pytest

from dispatcher.core import media, parts, segments
from dispatcher.core.models import MessageRecord, TemplateSend
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.compose import compose, parse_validity

ACCOUNT = "AC00000000000000000000000000000001"


def test_a_body_within_the_limit_is_one_segment() -> None:
    assert segments.split("hello world", 11) == ["hello world"]
    assert segments.count("x" * 4096) == 1


def test_long_bodies_split_on_word_boundaries_in_order() -> None:
    words = [f"w{i:03d}" for i in range(200)]  # 4 chars + a space each
    body = " ".join(words)
    out = segments.split(body, 50)
    assert all(0 < len(s) <= 50 for s in out)
    assert " ".join(out) == body  # nothing lost, nothing reordered, words whole
    assert all(not s.startswith(" ") and not s.endswith(" ") for s in out)


def test_a_space_just_after_the_limit_is_a_clean_cut() -> None:
    assert segments.split("aaaa bbbb", 4) == ["aaaa", "bbbb"]


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert segments.split("x" * 10 + " end", 4) == ["xxxx", "xxxx", "xx", "end"]


def test_whatsapp_text_limit_splits_a_9000_character_body_into_three() -> None:
    body = ("lorem ipsum " * 750).strip()  # 8999 characters
    out = segments.split(body)
    assert len(out) == 3 and all(len(s) <= 4096 for s in out)
    assert " ".join(out) == body


def test_split_refuses_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        segments.split("x", 0)


@pytest.mark.parametrize(
    ("url", "kind", "filename"),
    [
        ("https://cdn.example.com/a.jpg", "image", None),
        ("https://cdn.example.com/a.JPEG?sig=1", "image", None),
        ("https://cdn.example.com/p.png", "image", None),
        ("https://cdn.example.com/s.webp", "sticker", None),
        ("https://cdn.example.com/v.mp4", "video", None),
        ("https://cdn.example.com/v.3gp", "video", None),
        ("https://cdn.example.com/a.ogg", "audio", None),
        ("https://cdn.example.com/a.mp3", "audio", None),
        ("https://cdn.example.com/a.m4a", "audio", None),
        ("https://cdn.example.com/docs/invoice%2042.pdf", "document", "invoice 42.pdf"),
        ("https://cdn.example.com/data.csv", "document", "data.csv"),
        ("https://cdn.example.com/anim.gif", "document", "anim.gif"),  # WhatsApp takes no GIF images
        ("https://cdn.example.com/download", "document", "download"),
    ],
)
def test_media_kind_follows_the_content_type_of_the_extension(
    url: str, kind: str, filename: str | None
) -> None:
    item = media.classify(url)
    assert (item.kind, item.filename) == (kind, filename)


@pytest.mark.parametrize(
    "url", ["", "ftp://x.example/a.jpg", "/relative/a.jpg", "https:///nohost.jpg", "https://a b/c.jpg"]
)
def test_bad_media_urls_are_refused(url: str) -> None:
    with pytest.raises(media.MediaUrlError):
        media.check_url(url)


def _record(**kw: object) -> MessageRecord:
    return MessageRecord(sid="SM1", account_sid=ACCOUNT, from_number="+15550000001", to_number="+1555", **kw)  # type: ignore[arg-type]


def test_plan_puts_the_body_as_the_caption_of_the_first_media() -> None:
    plan = parts.plan(_record(body="Receipt", media_urls=["https://x.io/a.jpg", "https://x.io/b.pdf"]))
    assert [type(p).__name__ for p in plan] == ["MediaPart", "MediaPart"]
    first, second = plan
    assert isinstance(first, parts.MediaPart) and first.caption == "Receipt"
    assert isinstance(second, parts.MediaPart) and second.caption is None and second.item.kind == "document"


def test_plan_sends_the_body_as_text_after_audio_which_takes_no_caption() -> None:
    plan = parts.plan(_record(body="listen", media_urls=["https://x.io/a.ogg"]))
    assert plan == [parts.MediaPart(media.classify("https://x.io/a.ogg")), parts.TextPart("listen")]


def test_plan_of_a_template_is_one_template_message() -> None:
    template = TemplateSend("HX" + "0" * 32, "ns", "hello", "en_US", ["Ada"])
    assert parts.plan(_record(body="Hi Ada", template=template)) == [parts.TemplatePart(template)]


def _compose(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "body": "hi",
        "media_urls": (),
        "content_sid": None,
        "content_variables": None,
        "validity_period": None,
        "templates": None,
        "max_body": 1600,
    }
    args.update(kw)
    return compose(ACCOUNT, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"body": None}, 21602),
        ({"body": ""}, 21602),
        ({"body": "x" * 1601}, 21617),
        ({"media_urls": ["https://x.io/a.jpg"] * 11}, 21623),
        ({"media_urls": ["javascript:alert(1)"]}, 21620),
        ({"content_variables": '{"1":"a"}'}, 21654),
        ({"content_sid": "HX" + "0" * 32}, 21655),  # no registry: unknown
        ({"validity_period": "0"}, 21624),
        ({"validity_period": "36001"}, 21624),
        ({"validity_period": "ten"}, 21624),
        ({"validity_period": "1.5"}, 21624),
    ],
)
def test_bad_content_gets_twilios_code(kw: dict[str, object], code: int) -> None:
    with pytest.raises(TwilioError) as info:
        _compose(**kw)
    assert info.value.code == code and info.value.status == 400


def test_media_only_message_needs_no_body_and_a_raised_max_body_is_honoured() -> None:
    content = _compose(body=None, media_urls=["https://x.io/a.jpg"])
    assert content.media_urls == ["https://x.io/a.jpg"] and content.body == ""
    assert _compose(body="x" * 9000, max_body=10_000).body == "x" * 9000
    assert parse_validity("36000") == 36000 and parse_validity(None) is None


def test_the_cloud_channel_encodes_templates_and_media_in_graph_shape() -> None:
    from dispatcher.channels.cloud import encode_send

    template = TemplateSend("HX" + "0" * 32, "ns", "order_shipped", "en_US", ["Ada"])
    sent = msgspec.json.decode(encode_send(_record(body="Hi Ada", template=template)))
    assert sent == {
        "to": "1555",
        "template": {
            "name": "order_shipped",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"text": "Ada", "type": "text"}]}],
        },
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "type": "template",
    }
    record = _record(body="look", media_urls=["https://x.io/a.png", "https://x.io/r.pdf"], parts=2)
    first, second = (msgspec.json.decode(encode_send(record, part)) for part in (0, 1))
    assert first["type"] == "image" and first["image"] == {"link": "https://x.io/a.png", "caption": "look"}
    assert second["document"] == {"link": "https://x.io/r.pdf", "filename": "r.pdf"}
    assert first["messaging_product"] == second["messaging_product"] == "whatsapp"
