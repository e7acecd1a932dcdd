"""The control API of spec-described channels under ``/_sim/spec/``: JSON in, JSON out.

- ``POST /_sim/spec/numbers {SpecNumber fields}`` -> 201 ``{"number", "kind"}``: serve a number
  of a channel kind (its settings as the gateway's config gives them)
- ``DELETE /_sim/spec/numbers/{digits}``          -> stop serving it
- ``GET  /_sim/spec/received?number=%2B1555...``  -> ``{"messages": [{id, kind, recipient, values}]}``
- ``POST /_sim/spec/inbound {"number", "from", "body"}`` or ``{..., "media": {"kind", "mime_type",
  "data" (base64)}}`` -> ``{"id", "media_id"?}``: a customer's message, posted as the spec says
- ``POST /_sim/spec/status {"number", "id", "status", "recipient"?, "code"?}`` -> 202: one status
  webhook now, in the channel's own status names (any path a test needs)

Counters are in ``GET /_sim/counters`` with every other number's; fault plans are set as for
On-Prem numbers (``PUT /_sim/faults/{digits}``) and apply to the spec's send requests.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import msgspec

from dispatcher.simulator.exchange import SimResponse, json_response
from dispatcher.simulator.spec_api import SpecNumber

if TYPE_CHECKING:
    from dispatcher.simulator.core import Simulator


class _Media(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    mime_type: str
    data: str


class _Inbound(msgspec.Struct, forbid_unknown_fields=True):
    number: str
    from_: str = msgspec.field(name="from")
    body: str = ""
    media: _Media | None = None


class _Status(msgspec.Struct, forbid_unknown_fields=True):
    number: str
    id: str
    status: str
    recipient: str = ""
    code: str = ""


def _error(status: int, message: str) -> SimResponse:
    return json_response(status, msgspec.json.encode({"error": message}))


def handle(sim: Simulator, method: str, route: str, query: str, body: bytes) -> SimResponse:
    """Answer ``method /_sim/spec/{route}?{query}``."""
    try:
        return _route(sim, method, route, query, body)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        return _error(400, str(exc))
    except KeyError as exc:
        return _error(404, str(exc.args[0]) if exc.args else "not found")
    except LookupError as exc:
        return _error(409, str(exc))


def _route(sim: Simulator, method: str, route: str, query: str, body: bytes) -> SimResponse:
    specs = sim.specs
    match method, route:
        case "POST", "numbers":
            number = msgspec.json.decode(body, type=SpecNumber)
            sim.add_spec_number(number)
            return json_response(201, msgspec.json.encode({"number": number.number, "kind": number.kind}))
        case "DELETE", _ if route.startswith("numbers/"):
            specs.remove_number(route.removeprefix("numbers/"))
            return json_response(200, b"{}")
        case "GET", "received":
            wanted = (parse_qs(query).get("number") or [""])[0]
            messages = [
                {"id": m.id, "kind": m.kind, "recipient": m.recipient, "values": dict(m.values)}
                for m in specs.received(wanted)
            ]
            return json_response(200, msgspec.json.encode({"messages": messages}))
        case "POST", "inbound":
            given = msgspec.json.decode(body, type=_Inbound)
            if given.media is None:
                return json_response(
                    200,
                    msgspec.json.encode({"id": specs.inbound_text(given.number, given.from_, given.body)}),
                )
            try:
                data = base64.b64decode(given.media.data, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"media.data: not base64: {exc}") from None
            msg_id, media_id = specs.inbound_media(
                given.number, given.from_, given.media.kind, data, given.media.mime_type
            )
            return json_response(200, msgspec.json.encode({"id": msg_id, "media_id": media_id}))
        case "POST", "status":
            status = msgspec.json.decode(body, type=_Status)
            specs.emit_status(
                status.number, status.id, status.status, recipient=status.recipient, code=status.code
            )
            return json_response(202, b"{}")
    return _error(404, f"no route {method} /_sim/spec/{route}")
