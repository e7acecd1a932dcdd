"""Simulator configuration: one ``SimNumber`` per simulated WhatsApp business number.

``SimNumber`` is a msgspec Struct so the control API (``POST /_sim/numbers``) and
the CLI decode it with the same constraints the in-process API checks.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

API_VERSION = "v2.53.1"
"""On-Premises API version reported in every ``meta`` envelope."""

DEFAULT_TOKEN_TTL = 7 * 86_400.0
"""Bearer token lifetime: 7 days, as real On-Prem JWTs show (``exp - iat == 604800``)."""

DEFAULT_INVALID_PREFIX = "1555999"
"""Recipients whose digits start with this are not WhatsApp users (status ``failed``, 1013)."""

E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{4,14}$")]


class SimNumber(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One simulated business number: its credentials, webhook and request-rate limit.

    Served under ``/{digits}/v1/...`` (``+15550000001`` -> ``/15550000001``).
    """

    number: E164
    """E.164 with a leading ``+``."""
    password: Annotated[str, msgspec.Meta(min_length=1)]
    username: Annotated[str, msgspec.Meta(min_length=1)] = "admin"
    webhook_url: str | None = None
    """Where status and inbound-message webhooks go; ``None`` sends none until set."""
    rate: Annotated[float, msgspec.Meta(gt=0.0)] = 20.0
    """Sustained ``POST /v1/messages`` per second before HTTP 429."""
    burst: Annotated[int, msgspec.Meta(ge=1)] = 60
    token_ttl: Annotated[float, msgspec.Meta(gt=0.0)] = DEFAULT_TOKEN_TTL

    @property
    def digits(self) -> str:
        """The number without ``+``: its path prefix and its WhatsApp id."""
        return self.number[1:]


def checked(number: SimNumber) -> SimNumber:
    """Apply the field constraints, which msgspec checks only when decoding.

    Raises:
        msgspec.ValidationError: naming the bad field.
    """
    return msgspec.convert(msgspec.structs.asdict(number), SimNumber)


def digits_of(number: str) -> str:
    """``"+1555..."``, ``"1555..."`` or ``" 1555..."`` (a query-string ``+``) -> ``"1555..."``."""
    return number.strip().removeprefix("+")
