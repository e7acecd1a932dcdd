"""Configs for tests, loaded from TOML text as an operator writes it (so they pass the real checks).

``onprem_table`` / ``cloud_table`` write one ``[[numbers]]`` table with its secrets;
``load`` adds the account and the sections around them. ``number_config`` and
``cloud_number_config`` are the one number an actor is built from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dispatcher import config as configuration

ACCOUNT = "AC00000000000000000000000000000001"
NUMBER = "+15550000001"
CLOUD = "+15550009999"
PNID = "106540352242922"
AUTH_TOKEN = "test-auth-token-0123456789"
PASSWORD = "Passw0rd!"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
CLOUD_TOKEN = "EAAsystemuser"
APP_SECRET = "test-app-secret-0123456789"
VERIFY_TOKEN = "test-verify-token-0123456789"


def value(v: object) -> str:
    """``v`` as a TOML value: strings, numbers, booleans, lists, inline tables."""
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    return json.dumps(v)


def keys(fields: Mapping[str, object]) -> str:
    """One ``key = value`` line per field."""
    return "".join(f"{k} = {value(v)}\n" for k, v in fields.items())


Secret = str | Mapping[str, str]
"""A secret's text, given inline; or its table, e.g. ``{"file": path}``."""


def secret(given: Secret) -> Mapping[str, str]:
    """A secret as its config table (``{ value = "..." }`` for a text)."""
    return {"value": given} if isinstance(given, str) else given


def onprem_table(
    number: str,
    *,
    account: str = ACCOUNT,
    password: Secret = PASSWORD,
    webhook_secret: Secret = WEBHOOK_SECRET,
    **fields: object,
) -> str:
    """An On-Prem number; ``fields`` add keys (``simulated=True``, ``endpoints=[...]``, ``rate=5``...)."""
    head = {"number": number, "account": account, "password": secret(password)}
    return "\n[[numbers]]\n" + keys({**head, "webhook_secret": secret(webhook_secret), **fields})


def cloud_table(
    number: str = CLOUD,
    *,
    account: str = ACCOUNT,
    phone_number_id: str = PNID,
    access_token: Secret = CLOUD_TOKEN,
    app_secret: Secret = APP_SECRET,
    verify_token: Secret = VERIFY_TOKEN,
    cloud: Mapping[str, object] | None = None,
    **fields: object,
) -> str:
    """A Cloud API number; ``fields`` add keys to the number, ``cloud`` to its ``[numbers.cloud]``."""
    limits = {
        "phone_number_id": phone_number_id,
        "access_token": secret(access_token),
        "app_secret": secret(app_secret),
        "verify_token": secret(verify_token),
        **(cloud or {}),
    }
    head = {"number": number, "account": account, "channel": "cloud", **fields}
    return "\n[[numbers]]\n" + keys(head) + "[numbers.cloud]\n" + keys(limits)


def load(
    *numbers: str,
    account: str = ACCOUNT,
    auth_token: Secret = AUTH_TOKEN,
    **sections: Mapping[str, object],
) -> configuration.Config:
    """A config of one account and the ``numbers`` tables; ``sections`` are the others
    (``server={"drain_timeout": 2.0}``, ``simulator={}`` for an empty ``[simulator]``)."""
    head = "".join(f"[{name}]\n{keys(fields)}" for name, fields in sections.items())
    text = head + "[[accounts]]\n" + keys({"sid": account, "auth_token": secret(auth_token)})
    return configuration.loads(text + "".join(numbers))


def fleet_config(*numbers: str, drain: float, **fields: object) -> configuration.Config:
    """On-Prem ``numbers`` as a reload sees them (not simulated), each with ``fields``, and the
    server's ``drain_timeout``: what a live reload adds, replaces or removes."""
    return load(*(onprem_table(n, **fields) for n in numbers), server={"drain_timeout": drain})


def number_config(number: str = NUMBER, **fields: object) -> configuration.NumberConfig:
    """A simulated On-Prem number as its actor is built from it; ``fields`` add keys."""
    return load(onprem_table(number, simulated=True, **fields), simulator={}).numbers[0]


def cloud_number_config(*, access_token: Secret = CLOUD_TOKEN, **cloud: object) -> configuration.NumberConfig:
    """The simulated Cloud number ``CLOUD``; ``cloud`` adds keys to its ``[numbers.cloud]``."""
    table = cloud_table(simulated=True, access_token=access_token, cloud=cloud)
    return load(table, simulator={}).numbers[0]


SMS = "+15550007777"
VONAGE_SETTINGS: Mapping[str, object] = {
    "api_key": "vonage-key",
    "api_secret": {"value": "vonage-secret-0123456789"},
    "webhook_secret": {"value": "vonage-webhook-secret-0123456789"},
}


def spec_table(
    number: str = SMS,
    *,
    channel: str = "vonage-sms",
    settings: Mapping[str, object] = VONAGE_SETTINGS,
    account: str = ACCOUNT,
    **fields: object,
) -> str:
    """A number of a channel spec kind with its ``[numbers.settings]``; ``fields`` add keys."""
    head = {"number": number, "account": account, "channel": channel, **fields}
    return "\n[[numbers]]\n" + keys(head) + "[numbers.settings]\n" + keys(settings)
