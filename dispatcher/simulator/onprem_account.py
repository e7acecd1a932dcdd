"""The On-Premises webapp's account registration: ``POST /v1/account`` and ``/v1/account/verify``.

As Meta's On-Prem Postman collection shows them (apidog copy; the reference confirms the webhook
settings, ``PATCH /v1/settings/application``, already served by ``endpoints``):

- ``POST /v1/account`` ``{"cc", "phone_number", "method": "sms"|"voice", "cert", "pin"?}``: the
  number and the base64 certificate from Business Manager; a code is sent (202), or the number is
  registered already (201);
- ``POST /v1/account/verify`` ``{"code"}``: registered (201).

Both need the login token. The status codes 201/202 and the error codes used for a wrong
certificate or code (1009, invalid parameter) are our reading, not confirmed by the reference.
The code "sent" is readable on the control API (``GET /_sim/numbers/{digits}/account``).
"""

from __future__ import annotations

import base64
import binascii
import random
from typing import Final, Literal, final

import attrs
import msgspec

from dispatcher.simulator import errors
from dispatcher.simulator.exchange import SimResponse, json_response
from dispatcher.simulator.messages import decode_body
from dispatcher.simulator.state import NumberState
from dispatcher.simulator.wire import MetaOnly, encode

_OK: Final = encode(MetaOnly())


class _Register(msgspec.Struct, forbid_unknown_fields=True):
    cc: str
    phone_number: str
    method: Literal["sms", "voice"]
    cert: str
    pin: str | None = None


class _Verify(msgspec.Struct, forbid_unknown_fields=True):
    code: str


_register: Final = msgspec.json.Decoder(_Register).decode
_verify: Final = msgspec.json.Decoder(_Verify).decode


@attrs.define
class Account:
    registered: bool = False
    code: str | None = None
    method: str | None = None
    pin: str | None = None


@final
class Accounts:
    """Each On-Prem number's registration, by number."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._accounts: dict[str, Account] = {}

    def of(self, number: str) -> Account:
        return self._accounts.setdefault(number, Account())

    def register(self, state: NumberState, body: bytes) -> SimResponse:
        given = decode_body(_register, body)
        if "+" + given.cc + given.phone_number != state.config.number:
            raise errors.invalid(f"cc {given.cc!r} + phone_number {given.phone_number!r} is not this number")
        try:
            base64.b64decode(given.cert, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise errors.invalid("cert: the base64 certificate from Business Manager") from exc
        if given.pin is not None and (len(given.pin) != 6 or not given.pin.isdigit()):
            raise errors.invalid("pin: the 6-digit two-step verification PIN")
        account = self.of(state.config.number)
        if account.registered:
            return json_response(201, _OK)
        account.code, account.method, account.pin = (
            f"{self._random.randrange(1_000_000):06d}",
            given.method,
            given.pin,
        )
        return json_response(202, _OK)

    def verify(self, state: NumberState, body: bytes) -> SimResponse:
        code = decode_body(_verify, body).code
        account = self.of(state.config.number)
        if account.registered:
            return json_response(201, _OK)
        if account.code is None or code != account.code:
            raise errors.invalid("code: not the registration code sent to this number")
        account.registered, account.code = True, None
        return json_response(201, _OK)
