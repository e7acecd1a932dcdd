"""``[[wabas]]``: a WhatsApp Business Account, its token and Graph version; numbers refer to it."""

from __future__ import annotations

import re

import pytest

from dispatcher import config

ACCOUNT = "AC00000000000000000000000000000001"
OTHER = "AC00000000000000000000000000000002"
ACCOUNTS = f"""
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "test-auth-token-0123456789" }}

[[accounts]]
sid = "{OTHER}"
auth_token = {{ value = "test-auth-token-9876543210" }}
"""
WABA = f"""
[[wabas]]
id = "102290129340398"
account = "{ACCOUNT}"
access_token = {{ value = "EAAwabatoken" }}
"""
NUMBER = f"""
[[numbers]]
number = "+15550000001"
account = "{ACCOUNT}"
channel = "cloud"
waba = "102290129340398"
[numbers.cloud]
phone_number_id = "106540352242922"
access_token = {{ value = "EAAtoken" }}
app_secret = {{ value = "app-secret-0123456789" }}
verify_token = {{ value = "verify-me-0123456789" }}
"""


def test_a_waba_with_defaults_and_a_number_of_it() -> None:
    cfg = config.loads(ACCOUNTS + WABA + NUMBER)
    (waba,) = cfg.wabas
    assert (waba.id, waba.account, waba.graph_version) == ("102290129340398", ACCOUNT, "v23.0")
    assert waba.access_token.resolve("t") == "EAAwabatoken"
    assert (waba.simulated, waba.sync_interval, waba.on_paused) == (False, 900.0, "wait")
    assert config.waba_base_url(waba) == "https://graph.facebook.com"
    assert cfg.numbers[0].waba == "102290129340398"


def test_the_token_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WABA_TOKEN_X", "EAAfromenv")
    text = ACCOUNTS + WABA.replace('{ value = "EAAwabatoken" }', '{ env = "WABA_TOKEN_X" }')
    extra = 'graph_version = "v25.0"\nendpoint = "http://127.0.0.1:9/"\non_paused = "fail"\n'
    (waba,) = config.loads(text + extra).wabas
    assert waba.access_token.resolve("t") == "EAAfromenv"
    assert (waba.graph_version, waba.on_paused) == ("v25.0", "fail")
    assert config.waba_base_url(waba) == "http://127.0.0.1:9"


def test_numbers_need_no_waba() -> None:
    assert config.loads(ACCOUNTS + NUMBER.replace('waba = "102290129340398"\n', "")).numbers[0].waba is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ACCOUNTS + WABA + WABA, "wabas[1].id: duplicate WABA 102290129340398"),
        (ACCOUNTS + WABA.replace('"102290129340398"', '"waba-1"'), "wabas[0].id"),
        (ACCOUNTS + WABA.replace(ACCOUNT, "AC" + "f" * 32), f"wabas[0].account: no account AC{'f' * 32}"),
        (ACCOUNTS + WABA.replace('"EAAwabatoken"', '"  "'), "wabas[0].access_token: must not be empty"),
        (
            ACCOUNTS + WABA.replace('{ value = "EAAwabatoken" }', '{ env = "NOPE_UNSET_WABA" }'),
            "wabas[0].access_token.env: environment variable NOPE_UNSET_WABA is not set",
        ),
        (ACCOUNTS + WABA + 'graph_version = "23.0"\n', "wabas[0].graph_version"),
        (ACCOUNTS + WABA + "simulated = true\n", "wabas[0].simulated: needs a [simulator] section"),
        (ACCOUNTS + WABA + 'endpoint = "ftp://graph"\n', "wabas[0].endpoint: not an http(s) base URL"),
        (ACCOUNTS + WABA + "sync_interval = 1\n", "wabas[0].sync_interval"),
        (ACCOUNTS + WABA + 'on_paused = "drop"\n', "wabas[0].on_paused"),
        (ACCOUNTS + WABA + "colour = 1\n", "wabas[0].colour: unknown key"),
        (ACCOUNTS + NUMBER, "numbers[0].waba: no WABA 102290129340398 in [[wabas]]"),
        (
            ACCOUNTS + WABA.replace(ACCOUNT, OTHER) + NUMBER,
            f"numbers[0].waba: WABA 102290129340398 belongs to account {OTHER}, not to {ACCOUNT}",
        ),
    ],
)
def test_bad_waba_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.loads(text)


def test_a_simulated_waba_takes_no_endpoint() -> None:
    text = "[simulator]\n" + ACCOUNTS + WABA + 'simulated = true\nendpoint = "http://127.0.0.1:9"\n'
    message = "wabas[0].endpoint: a simulated WABA takes no endpoint"
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.loads(text)
    (waba,) = config.loads("[simulator]\n" + ACCOUNTS + WABA + "simulated = true\n").wabas
    assert waba.simulated
