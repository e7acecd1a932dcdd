"""No weak or empty secrets: config refuses them naming the key, and an empty secret never matches."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from dispatcher import config
from dispatcher.cli import main
from dispatcher.core import secretpolicy
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.admin import bearer_matches
from dispatcher.frontdoor.cloud_routes import signature, signature_ok
from dispatcher.messages.auth import ApiKey, Authenticator

ACCOUNT = "AC00000000000000000000000000000001"
KEY = "SK00000000000000000000000000000001"
STRONG = "c0ffee-7a1b9e42d5f83a60"

# Every secret the daemon checks callers against, as (key path, config with SECRET in its place).
ONPREM = f"""
[admin]
token = {{ value = "{STRONG}" }}

[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{STRONG}" }}

[[accounts.api_keys]]
sid = "{KEY}"
secret = {{ value = "{STRONG}" }}

[[numbers]]
number = "+15550000001"
account = "{ACCOUNT}"
endpoints = ["https://wa.example.com:9090"]
password = {{ value = "pw" }}
webhook_secret = {{ value = "{STRONG}" }}

[[numbers]]
number = "+15550000002"
account = "{ACCOUNT}"
channel = "cloud"
[numbers.cloud]
phone_number_id = "106540352242922"
access_token = {{ value = "EAAtoken" }}
app_secret = {{ value = "{STRONG}" }}
verify_token = {{ value = "{STRONG}" }}
"""
CHECKED = [
    ("admin.token", "token = "),
    ("accounts[0].auth_token", "auth_token = "),
    ("accounts[0].api_keys[0].secret", "secret = "),
    ("numbers[0].webhook_secret", "webhook_secret = "),
    ("numbers[1].cloud.app_secret", "app_secret = "),
    ("numbers[1].cloud.verify_token", "verify_token = "),
]
PRESENTED = [("numbers[0].password", "password = "), ("numbers[1].cloud.access_token", "access_token = ")]


def with_secret(line_start: str, secret: str) -> str:
    """ONPREM with the value of the line starting with ``line_start`` replaced by ``secret`` (TOML)."""
    lines = ONPREM.splitlines()
    [index] = [i for i, line in enumerate(lines) if line.startswith(line_start)]
    lines[index] = f"{line_start}{secret}"
    return "\n".join(lines)


def test_the_full_config_is_valid() -> None:
    assert len(config.loads(ONPREM).numbers) == 2


@pytest.mark.parametrize(("key", "line"), CHECKED)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("short-secret", r"too short \(12 characters\): use at least 16"),
        ("a" * 40, "too weak: fewer than 5 different characters"),
        ("ab" * 20, "too weak: fewer than 5 different characters"),
    ],
)
def test_an_empty_or_weak_checked_secret_is_refused_naming_the_key(
    key: str, line: str, value: str, reason: str
) -> None:
    with pytest.raises(config.ConfigError, match="^" + re.escape(key) + ": " + reason) as e:
        config.loads(with_secret(line, f'{{ value = "{value}" }}'))
    assert value.strip() == "" or value not in str(e.value)  # the error never shows the secret


@pytest.mark.parametrize(("key", "line"), CHECKED + PRESENTED)
def test_an_empty_credential_file_is_refused_naming_the_key_and_the_file(
    key: str, line: str, tmp_path: Path
) -> None:
    empty = tmp_path / "credential"
    empty.write_text("\n")
    with pytest.raises(config.ConfigError, match=r"must not be empty \(file .*credential\)$") as e:
        config.loads(with_secret(line, f'{{ file = "{empty}" }}'))
    assert str(e.value).startswith(key + ":")


@pytest.mark.parametrize(("key", "line"), CHECKED + PRESENTED)
def test_an_empty_environment_variable_is_refused(
    key: str, line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_TEST_EMPTY", "")
    with pytest.raises(
        config.ConfigError, match=r"must not be empty \(environment variable WADISPATCH_TEST_EMPTY\)"
    ):
        config.loads(with_secret(line, '{ env = "WADISPATCH_TEST_EMPTY" }'))


@pytest.mark.parametrize(("key", "line"), PRESENTED)
def test_credentials_we_only_present_may_be_short_but_not_empty(key: str, line: str) -> None:
    config.loads(with_secret(line, '{ value = "p" }'))
    with pytest.raises(config.ConfigError, match="^" + re.escape(key) + ": must not"):
        config.loads(with_secret(line, '{ value = "" }'))


def test_check_config_refuses_an_empty_auth_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "auth-token"
    empty.write_text("")
    path = tmp_path / "dispatcher.toml"
    path.write_text(with_secret("auth_token = ", f'{{ file = "{empty}" }}'))
    assert main(["check-config", str(path)]) == 2
    assert "accounts[0].auth_token: must not be empty" in capsys.readouterr().err


def test_a_reload_with_an_emptied_secret_is_refused(tmp_path: Path) -> None:
    """Reload loads through the same validate(): an emptied credential file is rejected, not applied."""
    secret = tmp_path / "webhook-secret"
    secret.write_text(STRONG)
    path = tmp_path / "dispatcher.toml"
    path.write_text(with_secret("webhook_secret = ", f'{{ file = "{secret}" }}'))
    config.load(path)
    secret.write_text("")
    with pytest.raises(config.ConfigError, match=r"^numbers\[0\]\.webhook_secret: must not be empty"):
        config.load(path)


@pytest.mark.parametrize(
    ("value", "weak"),
    [
        ("", True),
        ("0123456789abcde", True),  # 15
        ("0123456789abcdef", False),  # 16, Twilio-like hex
        ("1111111111111112", True),
        ("sandbox-auth-token", False),
        ("EAAGm0PX4ZCpsBAKZAaBk2ZBLX", False),
    ],
)
def test_weakness(value: str, weak: bool) -> None:
    assert (secretpolicy.weakness(value) is not None) is weak


def test_an_empty_secret_never_matches() -> None:
    assert secretpolicy.matches(STRONG, STRONG)
    assert not secretpolicy.matches("", "")
    assert not secretpolicy.matches(b"", b"")
    assert not secretpolicy.matches("", None)
    assert not secretpolicy.matches("x", "")


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_an_empty_password_is_never_accepted_even_with_an_empty_token_behind_the_config() -> None:
    """Belt and braces: had an empty token reached the authenticator, ``-u AC...:`` still fails."""
    auth = Authenticator({ACCOUNT: ""}, {KEY: ApiKey(ACCOUNT, "")})
    for user in (ACCOUNT, KEY):
        with pytest.raises(TwilioError) as e:
            auth.account_for(basic(user, ""))
        assert e.value.status == 401
    good = Authenticator({ACCOUNT: STRONG})
    assert good.account_for(basic(ACCOUNT, STRONG)) == ACCOUNT
    with pytest.raises(TwilioError):
        good.account_for(basic(ACCOUNT, ""))


def test_an_empty_admin_token_or_app_secret_never_matches() -> None:
    assert bearer_matches(f"Bearer {STRONG}", STRONG)
    assert not bearer_matches("Bearer ", "")
    assert not bearer_matches("Bearer", "")
    body = b'{"object": "whatsapp_business_account", "entry": []}'
    assert signature_ok(STRONG, body, signature(STRONG, body))
    assert not signature_ok("", body, signature("", body))  # anyone can sign with an empty key


def test_a_webhook_without_its_secret_never_matches_an_empty_one() -> None:
    """The header-auth webhook with no header (so ``""``) against a number whose secret went empty."""
    numbers = {
        "+15550000001": NumberInfo("+15550000001", ACCOUNT, "", webhook_auth="header"),
        "+15550000002": NumberInfo("+15550000002", ACCOUNT, "", webhook_auth="path"),
        "+15550000003": NumberInfo("+15550000003", ACCOUNT, STRONG, webhook_auth="header"),
    }
    directory = Directory(numbers.values())
    assert directory.webhook_number("15550000001", "", via="header") is None
    assert directory.webhook_number("15550000002", "") is None
    assert directory.webhook_number("15550000003", "", via="header") is None
    assert directory.webhook_number("15550000003", STRONG, via="header") is numbers["+15550000003"]
