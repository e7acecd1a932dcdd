"""``[[numbers]] channel = "<kind>"`` with its settings, ``[channels] spec_dir``, and check-config."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dispatcher import config
from dispatcher.cli import main
from dispatcher.core.channelspec.model import Auth
from dispatcher.service.numbers import static_credentials
from tests.helpers.configs import ACCOUNT, AUTH_TOKEN, VONAGE_SETTINGS, load, spec_table

PUBLIC = {"public_url": "https://gw.example.com"}
SEND = '[send]\npath = "/send"\n[send.text]\nbody = { to = "{to}" }\n[answer]\nid_path = "id"\n'


def test_a_vonage_number_is_configured_by_its_settings() -> None:
    loaded = load(spec_table(), server=PUBLIC)
    num = loaded.numbers[0]
    assert num.channel == "vonage-sms"
    assert num.settings["api_key"] == "vonage-key"
    assert isinstance(num.settings["api_secret"], config.Secret)


@pytest.mark.parametrize(
    ("table", "error"),
    [
        (
            spec_table(channel="telegraph"),
            r"numbers\[0\]\.channel: no channel kind 'telegraph' \(known: onprem, cloud, .*vonage-sms",
        ),
        (
            spec_table(settings={**VONAGE_SETTINGS, "api_sekret": "x"}),
            r"numbers\[0\]\.settings\.api_sekret: unknown setting of vonage-sms",
        ),
        (
            spec_table(settings={"api_key": "k", "webhook_secret": "w"}),
            r"numbers\[0\]\.settings\.api_secret: required by vonage-sms",
        ),
        (
            spec_table(settings={**VONAGE_SETTINGS, "api_secret": {"env": "NOPE_NOT_SET_42"}}),
            r"settings\.api_secret\.env: environment variable NOPE_NOT_SET_42 is not set",
        ),
        (spec_table(password={"value": "x"}), r"numbers\[0\]\.password: not for a vonage-sms number"),
        (spec_table(simulated=True), r"numbers\[0\]\.simulated: needs a \[simulator\] section"),
    ],
)
def test_a_bad_spec_number_is_refused_naming_the_key(table: str, error: str) -> None:
    with pytest.raises(config.ConfigError, match=error):
        load(table, server=PUBLIC)


def test_settings_are_only_for_spec_kinds() -> None:
    from tests.helpers.configs import onprem_table

    with pytest.raises(config.ConfigError, match=r"numbers\[0\]\.settings: only for a channel spec kind"):
        load(onprem_table("+15550000001", endpoints=["https://wa.example.com"], settings={"a": "b"}))


def test_a_user_spec_is_found_in_spec_dir(tmp_path: Path) -> None:
    (tmp_path / "acme.toml").write_text(
        'kind = "acme-sms"\nbase_url = "https://acme.example.com"\n[settings.key]\n'
        + SEND.replace('{ to = "{to}" }', '{ to = "{to}", text = "{body}", key = "{setting.key}" }')
    )
    loaded = load(spec_table(channel="acme-sms", settings={"key": "k"}), channels={"spec_dir": str(tmp_path)})
    assert loaded.numbers[0].channel == "acme-sms"


def test_check_config_names_a_bad_key_in_a_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "acme.toml").write_text(
        'kind = "acme-sms"\n' + SEND.replace("[send.text]", "retries = 3\n[send.text]")
    )
    path = tmp_path / "wadispatch.toml"
    path.write_text(
        f'[channels]\nspec_dir = "{specs}"\n[[accounts]]\nsid = "{ACCOUNT}"\n'
        f'auth_token = {{ value = "{AUTH_TOKEN}" }}\n'
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{specs}/acme.toml: send.retries: unknown key" in err
    (specs / "acme.toml").write_text('kind = "acme-sms"\n' + SEND)
    assert main(["check-config", str(path)]) == 0


def test_a_status_url_channel_needs_the_public_url() -> None:
    twilio_like = spec_table(settings=VONAGE_SETTINGS)
    assert load(twilio_like).numbers  # vonage's callback is optional: {status_url?}


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        (
            {"type": "basic", "username": "{setting.user}", "password": "{setting.key}"},
            b"Basic " + base64.b64encode(b"u-1:k/+="),
        ),
        ({"type": "bearer", "token": "{setting.key}"}, b"Bearer k/+="),
        ({"type": "header", "name": "X-Api-Key", "value": "{setting.key}"}, b"k/+="),
        ({"type": "none"}, b""),
    ],
)
def test_static_credentials_give_the_header_value_of_their_auth(auth: dict[str, str], header: bytes) -> None:
    constants: dict[str, object] = {"setting.user": "u-1", "setting.key": "k/+="}
    assert static_credentials(Auth(**auth), constants).auth_header() == header  # type: ignore[arg-type]
