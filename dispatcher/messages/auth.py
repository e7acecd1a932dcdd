"""Who is calling: HTTP Basic with ``AccountSid:AuthToken`` or an API key ``SK...:secret``.

An API key belongs to one account and acts as that account, as on Twilio. A
caller may only reach its own account's resources: good credentials for
another account's path are a 403, bad credentials a 401, both code 20003.
Secrets are compared in constant time, also for unknown users; an empty
secret never matches.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Final, final

import attrs

from dispatcher.config import Config
from dispatcher.core.twilio import TwilioError

_DUMMY: Final = b"\x00" * 32


@attrs.frozen
class ApiKey:
    account_sid: str
    secret: str


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    return (user, secret) if sep else None


@final
class Authenticator:
    """The credentials in force: the accounts' auth tokens and API keys, swapped by a live reload."""

    def __init__(self, accounts: Mapping[str, str], api_keys: Mapping[str, ApiKey] | None = None) -> None:
        self._accounts = dict(accounts)  # account sid -> auth token
        self._keys = dict(api_keys or {})  # SK sid -> ApiKey

    def reload(self, accounts: Mapping[str, str], api_keys: Mapping[str, ApiKey] | None = None) -> None:
        """A live reload's accounts and API keys replace the old ones (a removed key stops working)."""
        self._accounts = dict(accounts)
        self._keys = dict(api_keys or {})

    def account_for(self, authorization: str | None) -> str:
        """The account the credentials act for; 401 (20003) unless they are valid."""
        pair = _basic(authorization)
        if pair is not None:
            user, secret = pair
            account_sid, expected = self._expected(user)
            ok = hmac.compare_digest(secret.encode(), expected.encode() if expected is not None else _DUMMY)
            # An empty secret, presented or configured, never matches (secretpolicy.matches, inlined:
            # this runs for every create).
            if ok and secret and expected and account_sid is not None:
                return account_sid
        raise TwilioError(401, 20003, "Authenticate")

    def authenticate(self, authorization: str | None, account_sid: str) -> None:
        """Valid credentials of ``account_sid`` (the account in the path), else 401 or 403."""
        if self.account_for(authorization) != account_sid:
            raise TwilioError(403, 20003, "Authenticate: these credentials cannot access that account")

    def auth_token(self, account_sid: str) -> str | None:
        return self._accounts.get(account_sid)

    def _expected(self, user: str) -> tuple[str | None, str | None]:
        if user.startswith("SK"):
            key = self._keys.get(user)
            return (None, None) if key is None else (key.account_sid, key.secret)
        token = self._accounts.get(user)
        return (None, None) if token is None else (user, token)


def api_keys(config: Config) -> dict[str, ApiKey]:
    """Every configured API key, by its SK sid (config.validate() checked they resolve)."""
    return {
        key.sid: ApiKey(account.sid, key.secret.resolve("api_keys.secret"))
        for account in config.accounts
        for key in account.api_keys
    }
