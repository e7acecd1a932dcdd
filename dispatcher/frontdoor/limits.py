"""How much of the outside world one request or connection may hold (defaults of ``[server]``).

A request body is read whole before it is decoded, so its size and the time it
may take to arrive are both bounded; the connections a client can keep open are
bounded too, so slow or idle clients cannot take every file descriptor the
daemon needs to reach WhatsApp.
"""

from __future__ import annotations

from typing import Final

MAX_REQUEST_BYTES: Final = 1 << 20
"""Bytes of a request body (a batch of 1,000 messages is ~200 KB); more is a 413."""

BODY_TIMEOUT: Final = 15.0
"""Seconds for a whole request body to arrive once it is read (1 MiB at 1 Mbit/s takes ~8 s); then a 408."""

MAX_CONNECTIONS: Final = 1000
"""Open HTTP connections at most; the next clients wait in the listen backlog until one closes."""

KEEP_ALIVE_TIMEOUT: Final = 75.0
"""Seconds an idle keep-alive connection (or one still sending its request head) is kept: longer
than the 60 s idle timeout of common load balancers, so they close first."""

H2_MAX_STREAMS: Final = 1
"""Requests at once on one HTTP/2 connection (hypercorn serves h2c on the plain listener; its default
is 100). One, as on an HTTP/1.1 connection, so ``max_connections`` also bounds the requests in flight
and the request bodies held (each at most ``MAX_REQUEST_BYTES``). No client of this API needs more: the Twilio
SDKs and WhatsApp's webhooks speak HTTP/1.1."""
