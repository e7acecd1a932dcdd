"""Config for Cloud API numbers: required fields, limits, and clear errors."""

from __future__ import annotations

import pytest

from dispatcher import config

ACCOUNT = "AC00000000000000000000000000000001"
BASE = f"""
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "test-auth-token-0123456789" }}

[[numbers]]
number = "+15550000001"
account = "{ACCOUNT}"
channel = "cloud"
"""
CLOUD = """
[numbers.cloud]
phone_number_id = "106540352242922"
access_token = { value = "EAAtoken" }
app_secret = { value = "app-secret-0123456789" }
verify_token = { value = "verify-me-0123456789" }
"""


def test_a_cloud_number_with_defaults() -> None:
    num = config.loads(BASE + CLOUD).numbers[0]
    assert num.channel == "cloud" and num.cloud is not None
    assert num.cloud.api_version == "v23.0"
    assert (num.cloud.throughput, num.cloud.messaging_limit, num.cloud.pair_interval) == (80.0, 250, 6.0)
    assert config.cloud_base_url(num) == "https://graph.facebook.com"


def test_limits_are_configurable() -> None:
    extra = 'api_version = "v26.0"\nthroughput = 1000\nmessaging_limit = "unlimited"\npair_burst = 10\n'
    num = config.loads(BASE + CLOUD + extra).numbers[0]
    assert num.cloud is not None
    assert (num.cloud.api_version, num.cloud.throughput, num.cloud.messaging_limit) == (
        "v26.0",
        1000.0,
        "unlimited",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE, 'numbers[0].cloud: required for channel = "cloud"'),
        (BASE + CLOUD + "throughput = 1001\n", "numbers[0].cloud.throughput"),
        (BASE + CLOUD + "messaging_limit = 0\n", "numbers[0].cloud.messaging_limit"),
        (BASE + CLOUD + 'messaging_limit = "lots"\n', "numbers[0].cloud.messaging_limit"),
        (BASE + CLOUD + 'api_version = "23"\n', "numbers[0].cloud.api_version"),
        (BASE.replace('channel = "cloud"', 'channel = "cloud"\nrate = 50') + CLOUD, "numbers[0].rate"),
        (
            BASE.replace('channel = "cloud"', 'channel = "cloud"\npassword = { value = "x" }') + CLOUD,
            "numbers[0].password",
        ),
        (BASE + CLOUD.replace('"EAAtoken"', '""'), "numbers[0].cloud.access_token: must not be empty"),
        (
            BASE + CLOUD.replace('{ value = "app-secret-0123456789" }', '{ env = "NOPE_UNSET_X" }'),
            "cloud.app_secret.env",
        ),
        (
            BASE + CLOUD.replace('phone_number_id = "106540352242922"', 'phone_number_id = "abc"'),
            "phone_number_id",
        ),
        (BASE + CLOUD + "colour = 1\n", "numbers[0].cloud.colour: unknown key"),
        (BASE.replace('channel = "cloud"', 'channel = "sms"'), "numbers[0].channel"),
    ],
)
def test_bad_cloud_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.loads(text)


def test_cloud_section_on_an_onprem_number_is_refused() -> None:
    text = (
        BASE.replace(
            'channel = "cloud"',
            'endpoints = ["https://wa.example.com"]\n'
            'password = { value = "p" }\nwebhook_secret = { value = "test-webhook-secret-0123456789" }',
        )
        + CLOUD
    )
    with pytest.raises(config.ConfigError, match=r"numbers\[0\].cloud: only for channel"):
        config.loads(text)
