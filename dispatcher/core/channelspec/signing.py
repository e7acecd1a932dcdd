"""Webhook signatures as a spec describes them: computed by the simulator, checked by the gateway.

``hmac`` over the raw body (LINE's ``x-line-signature``: base64 HMAC-SHA256; Meta's
``X-Hub-Signature-256``: ``sha256=`` + hex), or over the URL and the sorted form
parameters (Twilio's ``X-Twilio-Signature``: base64 HMAC-SHA1 of the full URL followed by
each parameter's name and value, sorted by name). ``path`` puts the secret in the URL.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable

from dispatcher.core.channelspec.model import Signature


def signed_input(sig: Signature, body: bytes, url: str, params: Iterable[tuple[str, str]]) -> bytes:
    """What the signature covers: the body, or the URL and the sorted parameters."""
    if sig.input == "body":
        return body
    return (url + "".join(k + v for k, v in sorted(params))).encode()


def signature(
    sig: Signature, key: str, body: bytes, url: str = "", params: Iterable[tuple[str, str]] = ()
) -> str:
    """The header value a sender puts on ``body`` (posted to ``url`` as ``params``)."""
    digest = hmac.new(key.encode(), signed_input(sig, body, url, params), sig.algorithm).digest()
    encoded = digest.hex() if sig.encoding == "hex" else base64.b64encode(digest).decode()
    return sig.prefix + encoded


def verify(
    sig: Signature, key: str, header: str, body: bytes, url: str, params: Iterable[tuple[str, str]]
) -> bool:
    """The header is the signature ``key`` gives (constant time); an empty key verifies nothing."""
    if not key:
        return False
    expected = signature(sig, key, body, url, params)
    return hmac.compare_digest(header.strip().encode(), expected.encode())
