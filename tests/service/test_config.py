from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher import config
from dispatcher.cli import main

GOOD = """
[[accounts]]
sid = "AC00000000000000000000000000000001"
auth_token = { value = "test-auth-token-0123456789" }

[[numbers]]
number = "+15550000001"
account = "AC00000000000000000000000000000001"
endpoints = ["https://wa.example.com:9090"]
password = { env = "WA_PASSWORD" }
webhook_secret = { file = "SECRET_FILE" }
"""


@pytest.fixture
def good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    secret = tmp_path / "secret"
    secret.write_text("hook-secret-0123456789\n")
    monkeypatch.setenv("WA_PASSWORD", "pw")
    return GOOD.replace("SECRET_FILE", str(secret))


def test_the_embedded_default_is_valid() -> None:
    cfg = config.load(Path(__file__).resolve().parents[2] / "conf" / "dispatcher.toml")
    assert cfg.server.listen == "127.0.0.1:8080"
    assert [n.number for n in cfg.numbers] == ["+15550000001", "+15550000002", "+15550000003"]
    assert cfg.accounts[0].auth_token.resolve("x") == "sandbox-auth-token"


def test_secrets_from_env_and_file(good: str) -> None:
    cfg = config.loads(good)
    num = cfg.numbers[0]
    assert num.password is not None and num.password.resolve("p") == "pw"
    assert num.webhook_secret is not None and num.webhook_secret.resolve("w") == "hook-secret-0123456789"
    assert num.rate == 20.0 and num.burst == 60  # On-Prem defaults


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[[numbers]]", "[[numbers]]\nrat = 5"), r"^numbers\[0\]\.rat: unknown key$"),
        (("[[numbers]]", "[[numbers]]\nrate = -1"), r"^numbers\[0\]\.rate: Expected `float` >= 0\.001$"),
        (
            ('number = "+15550000001"', 'number = "15550000001"'),
            r"^numbers\[0\]\.number: Expected `str` matching",
        ),
        (
            ('endpoints = ["https://wa.example.com:9090"]', "endpoints = []"),
            r"^numbers\[0\]\.endpoints: at least one",
        ),
        (
            ('endpoints = ["https://wa.example.com:9090"]', 'endpoints = ["ftp://x"]'),
            r"endpoints\[0\]: not an http",
        ),
        (
            (
                'account = "AC00000000000000000000000000000001"',
                'account = "AC0000000000000000000000000000000F"',
            ),
            r"^numbers\[0\]\.account: no account",
        ),
        (
            ('password = { env = "WA_PASSWORD" }', 'password = { env = "NOPE_UNSET" }'),
            r"password\.env: environment variable NOPE_UNSET is not set",
        ),
        (('password = { env = "WA_PASSWORD" }', 'password = { value = "a", env = "b" }'), r"exactly one of"),
        (
            ("[[accounts]]", '[server]\nlisten = "nonsense"\n[[accounts]]'),
            r"^server\.listen: expected HOST:PORT",
        ),
        (
            ('auth_token = { value = "test-auth-token-0123456789" }', "auth_token = 5"),
            r"^accounts\[0\]\.auth_token: Expected `object`",
        ),
        (
            ("[[numbers]]", "[[numbers]]\nbackoff_base = 10.0\nbackoff_cap = 5.0"),
            r"^numbers\[0\]\.backoff_base: must not exceed backoff_cap",
        ),
        (
            ("[[numbers]]", "[[numbers]]\nmax_attempts = 0"),
            r"^numbers\[0\]\.max_attempts: Expected `int` >= 1",
        ),
        (
            ("[[numbers]]", '[[numbers]]\non_ambiguous = "maybe"'),
            r"^numbers\[0\]\.on_ambiguous: Invalid enum value .maybe.",
        ),
        (
            ("[[accounts]]", "[supervisor]\ncrash_limit = 0\n[[accounts]]"),
            r"^supervisor\.crash_limit: Expected `int` >= 1",
        ),
        (
            ("[[accounts]]", "[supervisor]\ncrash_windw = 5.0\n[[accounts]]"),
            r"^supervisor\.crash_windw: unknown key$",
        ),
        (
            ("[[accounts]]", "[supervisor]\nrestart_base = 10.0\nrestart_max = 1.0\n[[accounts]]"),
            r"^supervisor\.restart_max: must be at least restart_base",
        ),
    ],
)
def test_bad_keys_and_values_are_named(good: str, edit: tuple[str, str], message: str) -> None:
    text = good.replace(*edit, 1)
    assert text != good
    with pytest.raises(config.ConfigError, match=message):
        config.loads(text)


def test_duplicate_numbers_are_refused(good: str) -> None:
    body = good[good.index("[[numbers]]") :]
    with pytest.raises(config.ConfigError, match=r"numbers\[1\]\.number: duplicate"):
        config.loads(good + body)


def test_simulated_numbers_need_a_simulator(good: str) -> None:
    text = good.replace('endpoints = ["https://wa.example.com:9090"]', "simulated = true")
    with pytest.raises(config.ConfigError, match=r"simulated: needs a \[simulator\] section"):
        config.loads(text)
    assert config.loads("[simulator]\n" + text).numbers[0].simulated


def test_not_toml_is_reported() -> None:
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.loads("numbers = [")


def test_check_config_command(good: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.toml"
    path.write_text(good)
    assert main(["check-config", str(path)]) == 0
    assert "ok (1 accounts, 1 numbers)" in capsys.readouterr().out
    path.write_text(good.replace("[[numbers]]", "[[numbers]]\nbogus = 1"))
    assert main(["check-config", str(path)]) == 2
    assert "numbers[0].bogus: unknown key" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


LONG_HOST = "a" * 600 + ".example.com"


@pytest.mark.parametrize(
    "url",
    [
        f"https://{LONG_HOST}/cb",  # a key its callbacks could not be queued under, and no DNS name
        "https://" + "b" * 64 + ".example.com/cb",
        "https://hooks.example.com:99999/cb",
        "ftp://hooks.example.com/cb",
        "https://user:hunter2@hooks.example.com/c b",
    ],
)
@pytest.mark.parametrize("key", ["status_callback", "inbound_url"])
def test_a_callback_url_no_request_could_reach_is_refused_without_echoing_it(
    good: str, key: str, url: str
) -> None:
    with pytest.raises(
        config.ConfigError, match=rf"^numbers\[0\]\.{key}: not a usable http\(s\) URL"
    ) as info:
        config.loads(good.replace("[[numbers]]", f'[[numbers]]\n{key} = "{url}"', 1))
    assert "hunter2" not in str(info.value)


def test_callback_urls_are_checked_on_cloud_numbers_and_services_too(good: str) -> None:
    cloud = f"""
[[accounts]]
sid = "AC00000000000000000000000000000002"
auth_token = {{ value = "test-auth-token-0123456789" }}
[[numbers]]
number = "+15550000009"
account = "AC00000000000000000000000000000002"
channel = "cloud"
status_callback = "https://{LONG_HOST}/cb"
[numbers.cloud]
phone_number_id = "106540352242922"
access_token = {{ value = "EAAtoken" }}
app_secret = {{ value = "app-secret-0123456789" }}
verify_token = {{ value = "verify-me-0123456789" }}
"""
    with pytest.raises(config.ConfigError, match=r"^numbers\[1\]\.status_callback: not a usable"):
        config.loads(good + cloud)
    service = f"""
[[services]]
sid = "MG00000000000000000000000000000001"
account = "AC00000000000000000000000000000001"
numbers = ["+15550000001"]
status_callback = "https://{LONG_HOST}/cb"
"""
    with pytest.raises(config.ConfigError, match=r"^services\[0\]\.status_callback: not a usable"):
        config.loads(good + service)
    fine = 'status_callback = "https://my_hooks.example.com/cb"'  # DNS carries underscores
    assert config.loads(good.replace("[[numbers]]", f"[[numbers]]\n{fine}", 1)).numbers[0].status_callback
