"""The fleet's parts between daemons: the route that gives this daemon's share, and the asker.

``GET /admin/v1/fleet`` takes the console's fleet query (``q``, ``state``, ``channel``,
``sort``, ``order``, ``page``, ``size``) and answers this daemon's share of that page as
msgpack (``FleetView.part``); the admin guard requires the admin token, which the daemons of
a cluster share. ``fleet_asker`` is how the daemon putting a page together asks another
(``ops.cluster_fleet.ClusterFleet``).
"""

from __future__ import annotations

from typing import Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.admin import PREFIX
from dispatcher.frontdoor.cluster_lists import Peers
from dispatcher.frontdoor.console.render import fleet_url
from dispatcher.frontdoor.forwarding import HOP_HEADER, Headers
from dispatcher.ops.cluster_fleet import AskFleet
from dispatcher.ops.fleet_view import FleetPart, FleetQuery, FleetView, QueryError, parse_fleet_query

FLEET_PATH: Final = f"{PREFIX}/fleet"
CONTENT_TYPE: Final = "application/vnd.wadispatch.fleet-part+msgpack"

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(FleetPart)


def register_fleet_part(app: QuartTrio, view: FleetView) -> None:
    @app.get(FLEET_PATH)
    async def fleet_part() -> Response:
        try:
            query = parse_fleet_query(request.args.get)
        except QueryError as exc:
            raise TwilioError(400, 20001, f"Invalid fleet query: {exc}") from None
        return Response(_encoder.encode(view.part(query)), status=200, content_type=CONTENT_TYPE)


def fleet_asker(pool: Peers, admin_token: str | None, owner_id: str) -> AskFleet:
    """Over the peer pool, with the admin token the daemons of one cluster share."""
    headers: Headers = [(HOP_HEADER, owner_id.encode())]
    if admin_token is not None:
        headers.append((b"authorization", b"Bearer " + admin_token.encode()))

    async def ask(address: str, query: FleetQuery) -> FleetPart:
        if admin_token is None:
            raise RuntimeError("no [admin] token to ask the other daemons with")
        target = fleet_url(query).replace("/console/fleet", FLEET_PATH, 1).encode()
        answer = await pool.request(address, b"GET", target, headers, b"")
        if answer.status != 200:
            raise RuntimeError(f"its admin API answered HTTP {answer.status}")
        return _decoder.decode(answer.body)

    return ask
