"""The template registry: file, persisted admin additions, ContentVariables, body matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.store import Store
from dispatcher.core.template_file import NewTemplate, Template, TemplateError, load_file
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.templates import TemplateExistsError, TemplateRegistry

ACCOUNT = "AC00000000000000000000000000000001"
OTHER = "AC00000000000000000000000000000002"
SHIPPED = "HX" + "1" * 32
HELLO = "HX" + "2" * 32

FILE = f"""
[[templates]]
sid = "{SHIPPED}"
account = "{ACCOUNT}"
namespace = "cdb2df51_9816_c754_c5a4_64cdabdcad3e"
name = "order_shipped"
language = "en_US"
body = "Hi {{{{1}}}}, your order {{{{2}}}} has shipped."

[[templates]]
sid = "{HELLO}"
account = "{ACCOUNT}"
namespace = "cdb2df51_9816_c754_c5a4_64cdabdcad3e"
name = "hello"
language = "en"
body = "Hello! Reply to continue."
"""


@pytest.fixture
async def registry(tmp_path: Path, writer: Store) -> TemplateRegistry:
    path = tmp_path / "templates.toml"
    path.write_text(FILE)
    return TemplateRegistry(writer, load_file(path))


async def test_content_variables_fill_the_placeholders(registry: TemplateRegistry) -> None:
    send, text = registry.resolve(ACCOUNT, SHIPPED, '{"1": "Ada", "2": 42}')
    assert text == "Hi Ada, your order 42 has shipped."
    assert (send.name, send.language, send.params) == ("order_shipped", "en_US", ["Ada", "42"])
    send, text = registry.resolve(ACCOUNT, HELLO, None)
    assert send.params == [] and text == "Hello! Reply to continue."


@pytest.mark.parametrize(
    ("sid", "variables", "code"),
    [
        ("HX123", '{"1":"a","2":"b"}', 21655),  # malformed sid
        ("HX" + "f" * 32, '{"1":"a","2":"b"}', 21655),  # unknown
        (SHIPPED, None, 21656),  # variables required
        (SHIPPED, "not json", 21656),
        (SHIPPED, '["Ada", "42"]', 21656),  # not an object
        (SHIPPED, '{"1": "Ada"}', 21656),  # "2" missing
        (SHIPPED, '{"1": "Ada", "2": ""}', 21656),  # empty value
        (SHIPPED, '{"1": "Ada", "2": null}', 21656),
        (SHIPPED, '{"1": "Ada", "2": true}', 21656),
        (SHIPPED, '{"1": "Ada", "2": "x", "7": "y"}', 21656),  # unknown variable
        (SHIPPED, '{"1": "Ada", "2": "' + "x" * 1601 + '"}', 21658),
    ],
)
async def test_bad_content_sid_or_variables_get_twilios_code(
    registry: TemplateRegistry, sid: str, variables: str | None, code: int
) -> None:
    with pytest.raises(TwilioError) as info:
        registry.resolve(ACCOUNT, sid, variables)
    assert info.value.code == code


async def test_another_accounts_template_is_not_found(registry: TemplateRegistry) -> None:
    with pytest.raises(TwilioError) as info:
        registry.resolve(OTHER, SHIPPED, '{"1":"a","2":"b"}')
    assert info.value.code == 21655


async def test_a_free_form_body_matching_a_template_becomes_that_template(registry: TemplateRegistry) -> None:
    send = registry.match(ACCOUNT, "Hi Ada Lovelace, your order #42-A has shipped.")
    assert send is not None and send.content_sid == SHIPPED and send.params == ["Ada Lovelace", "#42-A"]
    assert registry.match(ACCOUNT, "Hello! Reply to continue.") is not None
    assert registry.match(ACCOUNT, "Hi Ada, your order has shipped.") is None  # placeholder missing
    assert registry.match(ACCOUNT, "Hi Ada, your order 42 has shipped!") is None  # text differs
    assert registry.match(ACCOUNT, "Hi Ada\nLine, your order 42 has shipped.") is None  # no newlines
    assert registry.match(OTHER, "Hello! Reply to continue.") is None


async def test_admin_additions_persist_and_conflicts_are_refused(
    registry: TemplateRegistry, writer: Store
) -> None:
    added = await registry.add(
        NewTemplate(account=ACCOUNT, namespace="ns", name="otp", language="en", body="Your code is {{1}}.")
    )
    assert added.sid.startswith("HX") and len(added.sid) == 34
    with pytest.raises(TemplateExistsError):
        await registry.add(
            NewTemplate(sid=SHIPPED, account=ACCOUNT, namespace="ns", name="x", language="en", body="x")
        )
    with pytest.raises(TemplateError, match="placeholders"):
        await registry.add(
            NewTemplate(account=ACCOUNT, namespace="ns", name="y", language="en", body="{{2}}")
        )
    restarted = TemplateRegistry(writer, [registry.get(SHIPPED), registry.get(HELLO)])  # type: ignore[list-item]
    assert restarted.get(added.sid) == added
    assert {t.sid for t in restarted.list(ACCOUNT)} == {SHIPPED, HELLO, added.sid}
    assert restarted.list(OTHER) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[[templates]]\nsid = 'HX1'\n", "sid"),
        (FILE.replace("{{2}}", "{{3}}"), "placeholders"),
        (FILE.replace('name = "hello"', 'name = "Hello World"'), "name"),
        (FILE + "\nextra = 1\n", "extra"),
        ("not toml [", "TOML|toml"),
    ],
)
def test_a_bad_templates_file_is_refused_with_a_clear_error(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(TemplateError, match=error):
        load_file(path)


def test_a_missing_templates_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="cannot read templates file"):
        load_file(tmp_path / "nope.toml")


async def test_a_sid_defined_twice_is_refused(writer: Store) -> None:
    t = Template(sid=HELLO, account=ACCOUNT, namespace="n", name="a", language="en", body="x")
    with pytest.raises(TemplateExistsError):
        TemplateRegistry(writer, [t, t])


def test_the_shipped_example_templates_file_loads() -> None:
    templates = load_file(Path(__file__).resolve().parents[2] / "conf" / "templates.toml")
    assert {t.name for t in templates} == {"order_shipped", "appointment_reminder"}


def test_a_bad_templates_file_is_a_config_error(tmp_path: Path) -> None:
    from dispatcher import config as configuration

    path = tmp_path / "t.toml"
    path.write_text("[[templates]]\nsid = 'nope'\n")
    with pytest.raises(configuration.ConfigError, match=r"messaging\.templates_file"):
        configuration.loads(f'[messaging]\ntemplates_file = "{path}"\n')
