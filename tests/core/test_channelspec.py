"""The channel spec language: the shipped specs load, and every bad spec is refused naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.channelspec import paths, template
from dispatcher.core.channelspec.load import SHIPPED_DIR, SpecError, load_registry, loads

MINIMAL = """
kind = "acme-sms"
[send]
path = "/send"
[send.text]
body = { to = "{to}", text = "{body}" }
[answer]
id_path = "id"
"""


def test_the_shipped_specs_load() -> None:
    registry = load_registry()
    assert {"vonage-sms"} <= set(registry.kinds)
    assert all(Path(s.file).parent == SHIPPED_DIR for s in registry.specs.values())


def test_a_minimal_spec_loads_with_defaults() -> None:
    loaded = loads(MINIMAL, "acme.toml")
    assert loaded.kind == "acme-sms"
    assert loaded.spec.auth.type == "none"
    assert loaded.spec.send.format == "json"
    assert loaded.spec.prefix == ""


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("[send.text]", "[send.text]\nbogus = 1"), r"^acme\.toml: send\.text\.bogus: unknown key$"),
        (('kind = "acme-sms"', 'kind = "Acme SMS"'), r"^acme\.toml: kind: Expected `str` matching"),
        (("{body}", "{bdy}"), r"^acme\.toml: send\.text\.body\.text: unknown placeholder \{bdy\}"),
        (
            ("{body}", "{setting.key}"),
            r"send\.text\.body\.text: \{setting\.key\} names no \[settings\] entry",
        ),
        (("{body}", "{body"), r"send\.text\.body\.text: stray '\{'"),
        (('id_path = "id"', 'id_path = "a..b"'), r"^acme\.toml: answer\.id_path: not a path"),
        (('path = "/send"', 'path = "send"'), r"send\.path: must start with '/'"),
        (("[answer]", '[auth]\ntype = "basic"\n[answer]'), r"^acme\.toml: auth\.username: required"),
        (
            ("[answer]", '[auth]\ntype = "oauth"\n[answer]'),
            r"^acme\.toml: auth\.type: Invalid enum value 'oauth'",
        ),
        (("[answer]", '[[errors]]\nclass = "permanent"\n[answer]'), r"errors\[0\]\.twilio_code: required"),
        (
            ("[answer]", '[[errors]]\ncode = ["1"]\nclass = "transient"\n[answer]'),
            r"errors\[0\]\.code: needs",
        ),
        (('kind = "acme-sms"', 'kind = "cloud"'), r"kind: 'cloud' is a built-in channel"),
    ],
)
def test_a_bad_spec_names_its_file_and_key(change: tuple[str, str], error: str, tmp_path: Path) -> None:
    text = MINIMAL.replace(*change)
    (tmp_path / "acme.toml").write_text(text)
    with pytest.raises(
        SpecError,
        match=error.replace(r"^acme\.toml", "^" + str(tmp_path).replace(".", r"\.") + r"/acme\.toml"),
    ):
        load_registry(str(tmp_path), shipped=False)


def test_a_kind_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(MINIMAL)
    (tmp_path / "b.toml").write_text(MINIMAL)
    with pytest.raises(SpecError, match=r"b\.toml: kind: 'acme-sms' is already defined by .*a\.toml"):
        load_registry(str(tmp_path))


def test_a_missing_spec_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a directory of channel specs"):
        load_registry(str(tmp_path / "nowhere"))


def test_webhook_status_names_must_be_twilio_statuses() -> None:
    text = (
        MINIMAL
        + """
[webhook]
signature = { scheme = "none" }
[webhook.status]
id = "id"
status = "s"
map = { DELIVRD = "delivered", REJECTD = "refused" }
"""
    )
    with pytest.raises(SpecError, match=r"webhook\.status\.map\.REJECTD: 'refused' is not a Twilio status"):
        loads(text, "acme.toml")


def test_paths_read_and_write_the_same_places() -> None:
    path = paths.parse("messages[1].message-id")
    doc: dict[str, object] = {}
    path.put(doc, "abc")
    assert doc == {"messages": [None, {"message-id": "abc"}]}
    assert path.get(doc) == "abc"
    assert path.get({"messages": "nope"}) is None
    assert paths.parse("").get(doc) is doc
    for bad in ("a..b", ".a", "a.", "[0]", "a[x]"):
        with pytest.raises(paths.PathError):
            paths.parse(bad)


def test_templates_fold_constants_and_drop_optional_slots() -> None:
    render = template.compile_tree(
        {"to": "{to}", "cb": "{status_url?}", "key": "{setting.k}", "list": ["{a?}", "x{{y}}"], "n": 1},
        {"setting.k": "K", "status_url": ""},
    )
    assert render({"to": "+1555"}) == {"to": "+1555", "key": "K", "list": ["x{y}"], "n": 1}
    assert template.compile_text("{values}", {})({"values": ["a", "b"]}) == ["a", "b"]
    assert template.compile_text("Hi {name}!", {})({"name": "Ana"}) == "Hi Ana!"


def test_a_wildcard_path_gathers_every_item() -> None:
    path = paths.parse("entry[*].changes[*].value.statuses")
    doc = {
        "entry": [
            {"changes": [{"value": {"statuses": [1, 2]}}, {"value": {}}]},
            {"changes": [{"value": {"statuses": [3]}}]},
        ]
    }
    assert path.every(doc) == [1, 2, 3]
    assert path.get(doc) is None  # [*] reaches many places: only every() reads it
    built: dict[str, object] = {}
    path.put(built, ["s"])
    assert path.every(built) == ["s"]
    text = MINIMAL.replace('id_path = "id"', 'id_path = "data[*].id"')
    with pytest.raises(SpecError, match=r"answer\.id_path: \[\*\] is only for the items of a webhook"):
        loads(text, "acme.toml")


def test_a_table_with_only_missing_placeholders_is_left_out() -> None:
    render = template.compile_tree(
        {"messages": [{"type": "image", "url": "{media_url}"}, {"type": "text", "text": "{caption?}"}]}, {}
    )
    assert render({"media_url": "u"}) == {"messages": [{"type": "image", "url": "u"}]}
    assert render({"media_url": "u", "caption": "c"})["messages"][1] == {"type": "text", "text": "c"}  # type: ignore[index]


def test_a_key_may_be_a_placeholder() -> None:
    render = template.compile_tree({"type": "{media_kind}", "{media_kind}": {"link": "{media_url}"}}, {})
    assert render({"media_kind": "video", "media_url": "u"}) == {"type": "video", "video": {"link": "u"}}
