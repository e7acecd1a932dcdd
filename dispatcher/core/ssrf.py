"""SSRF guard for URLs customers give us (status callbacks, inbound webhooks, media).

A customer-supplied URL must not make the daemon reach into its own network:
loopback, private (RFC 1918 / ULA), link-local (incl. the cloud metadata
service 169.254.169.254 and fd00:ec2::254), carrier-grade NAT, multicast,
reserved and unspecified addresses are refused unless allow-listed.

Every address a host name resolves to is checked, and the caller connects to
the checked address (``Resolved.ip``) rather than resolving again, so a DNS
answer that changes between check and connect (DNS rebinding) cannot slip
through.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, final
from urllib.parse import SplitResult, urlsplit

import attrs
import idna
import trio

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_EXTRA_BLOCKED: Final[tuple[IPNetwork, ...]] = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT: is_private says no
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("198.18.0.0/15"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6 (covered by ULA too)
)


_MAX_HOST: Final = 253
_MAX_LABEL: Final = 63
_LDH_LABEL: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$", re.IGNORECASE)
# The common case in one match, no exception raised: an ASCII name of letters, digits and inner
# hyphens, labels of 1 to 63, 253 in all (a dotted-quad IPv4 address matches too).
_LDH_NAME: Final = re.compile(
    r"(?=.{1,253}\.?\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?",
    re.IGNORECASE,
)
_DNS_LABEL: Final = re.compile(r"^[!-~]+$")


class RefusedURLError(ValueError):
    """The URL is malformed or points at a forbidden address; retrying will not help."""


class ResolveError(OSError):
    """The host name did not resolve (may be transient)."""


@attrs.frozen
class Resolved:
    """A checked URL and the address to connect to."""

    url: str
    parts: SplitResult
    host: str
    port: int
    ip: str


def check_syntax(url: str) -> SplitResult:
    """An absolute http(s) URL with a host, no whitespace or control characters.

    Raises:
        RefusedURLError: not such a URL.
    """
    if len(url) > 2048 or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise RefusedURLError("the URL is too long or contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise RefusedURLError(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedURLError("only absolute http:// and https:// URLs are accepted")
    return parts


def check_host(host: str, *, strict: bool = True) -> str:
    """A host name DNS can carry, or an IP literal; returns its ASCII form (IDNA for a Unicode name).

    At most 253 bytes in all and 63 per label (RFC 1035), so every accepted host
    has an origin of bounded size. ``strict``: labels of letters, digits and
    hyphens only (RFC 1123), Twilio's rule for a StatusCallback ("underscores are
    not allowed"); otherwise any label DNS can hold (``_dmarc``-style names resolve).

    Raises:
        RefusedURLError: not such a host.
    """
    if _LDH_NAME.fullmatch(host):
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    try:
        # As trio's resolver encodes it (IDNA 2008 with UTS 46 mapping): a name it cannot
        # encode could never be looked up.
        name = host if host.isascii() else idna.encode(host, uts46=True).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError is one
        raise RefusedURLError(f"the host name is not a valid domain name: {exc}") from None
    labels = name.removesuffix(".").split(".")
    if len(name) > _MAX_HOST or any(not 1 <= len(label) <= _MAX_LABEL for label in labels):
        raise RefusedURLError(
            f"the host name is not a valid domain name (at most {_MAX_HOST} characters, "
            f"{_MAX_LABEL} per dot-separated label)"
        )
    pattern = _LDH_LABEL if strict else _DNS_LABEL
    if not all(pattern.match(label) for label in labels):
        what = "letters, digits and inner hyphens" if strict else "visible characters"
        raise RefusedURLError(f"the host name is not a valid domain name: labels hold only {what}")
    return name


def blocked(ip: IPAddress) -> bool:
    """True for addresses a customer URL may not reach."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return blocked(ip.ipv4_mapped)
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in net for net in _EXTRA_BLOCKED)
    )


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


@final
class UrlGuard:
    """Checks customer URLs; ``allow`` lists CIDRs or addresses exempt from the block list."""

    def __init__(self, allow: Iterable[str] = (), *, resolver: Resolver | None = None) -> None:
        self._allow = _networks(allow)
        self._resolve = resolver or _system_resolver

    def set_allow(self, allow: Iterable[str]) -> None:
        """Replace the allow-list (live reload); checks from here on use the new one."""
        self._allow = _networks(allow)

    def allowed(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._allow) or not blocked(ip)

    async def resolve(self, url: str) -> Resolved:
        """Check ``url`` and pick the address to connect to.

        Raises:
            RefusedURLError: malformed, or some address it resolves to is forbidden.
            ResolveError: the name did not resolve.
        """
        parts = check_syntax(url)
        host = parts.hostname or ""
        # A name no resolver can look up (a label over 63 bytes) is refused here: the system
        # resolver would raise UnicodeError for it, which is no OSError.
        check_host(host, strict=False)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                found = await self._resolve(host, port)
            except OSError as exc:
                raise ResolveError(f"cannot resolve {host}: {exc}") from exc
            except UnicodeError as exc:  # a name the resolver cannot encode: it never will
                raise RefusedURLError(f"cannot look up {host}: {exc}") from exc
            addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in found]
            if not addresses:
                raise ResolveError(f"{host} has no address")
        for ip in addresses:
            if not self.allowed(ip):
                raise RefusedURLError(f"{host} resolves to {ip}, a loopback/private/link-local address")
        return Resolved(url=url, parts=parts, host=host, port=port, ip=str(addresses[0]))
