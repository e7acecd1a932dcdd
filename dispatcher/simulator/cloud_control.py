"""Control API of the simulator's Cloud numbers, under ``/_sim/cloud/``.

- ``GET  /_sim/cloud/numbers``: the Cloud numbers served;
- ``POST /_sim/cloud/numbers``: serve one more (a ``CloudNumber`` JSON object);
- ``GET  /_sim/cloud/counters``: every number's counters, by phone number id (one request for a poller);
- ``GET  /_sim/cloud/{phone-number-id}``: its counters;
- ``POST /_sim/cloud/{phone-number-id}/inbound``: ``{"from": "+1...", "body": "..."}``, a customer writes;
  ``"type"``: ``text`` (default), ``voice`` (``audio/ogg; codecs=opus``), ``flow_reply`` (``body``:
  the Flows response JSON), ``reaction``, ``unsupported`` (with Meta's ``errors``) or any new type;
  ``"username_only": true``: the customer is known only by a business-scoped user id (no ``wa_id``,
  no ``from``); ``"repeat": n``: Meta redelivers it, n posts in all;
- ``POST /_sim/cloud/{phone-number-id}/status``: ``{"id", "status", "recipient_id"?, "errors"?, "repeat"?}``:
  one status now, any status (one Meta adds later too), with an ``errors`` array if given;
- ``POST /_sim/cloud/{phone-number-id}/webhook``: ``{"value": {...}, "repeat"?}``: a change value as it
  is (a shape recorded from the real platform), in a signed envelope;
- ``POST /_sim/cloud/{phone-number-id}/templates``: register a ``CloudTemplate``;
- ``POST /_sim/cloud/{phone-number-id}/revoke``: ``{"token": "..."}`` (optional): the access token
  stops working (sends get 190); only the given new token works from now on.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from dispatcher.simulator.cloud import CloudApi, CloudNumber, CloudTemplate, graph_error
from dispatcher.simulator.exchange import SimResponse, json_response

_encoder: Final = msgspec.json.Encoder()


_Repeat = Annotated[int, msgspec.Meta(ge=1, le=10)]


class _Inbound(msgspec.Struct, forbid_unknown_fields=True):
    sender: str = msgspec.field(name="from")
    body: str = ""
    profile_name: str = "Customer"
    type: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,32}$")] = "text"
    username_only: bool = False
    repeat: _Repeat = 1


class _Status(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    status: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    recipient_id: str = ""
    errors: list[dict[str, Any]] | None = None
    repeat: _Repeat = 1


class _Value(msgspec.Struct, forbid_unknown_fields=True):
    value: dict[str, Any]
    repeat: _Repeat = 1


class _Revoke(msgspec.Struct, forbid_unknown_fields=True):
    token: str | None = None


def _bad(details: str) -> SimResponse:
    return graph_error(400, 100, "Invalid parameter", details[:300])


def handle(api: CloudApi, method: str, path: str, body: bytes) -> SimResponse:
    """``path`` is what follows ``/_sim/cloud/``."""
    parts = path.strip("/").split("/")
    try:
        if parts == ["numbers"]:
            if method == "GET":
                return json_response(200, _encoder.encode(api.numbers()))
            if method == "POST":
                api.add_number(msgspec.json.decode(body, type=CloudNumber))
                return json_response(201, b"{}")
        elif parts == ["counters"] and method == "GET":
            every = {n.phone_number_id: api.counters(n.phone_number_id) for n in api.numbers()}
            return json_response(200, _encoder.encode(every))
        elif len(parts) == 1 and method == "GET":
            return json_response(200, _encoder.encode(api.counters(parts[0])))
        elif len(parts) == 2 and method == "POST":
            pnid, action = parts
            if action == "inbound":
                inbound = msgspec.json.decode(body, type=_Inbound)
                wamid = api.inbound(
                    pnid,
                    inbound.sender,
                    inbound.type,
                    inbound.body,
                    profile_name=inbound.profile_name,
                    username_only=inbound.username_only,
                    repeat=inbound.repeat,
                )
                return json_response(201, _encoder.encode({"id": wamid}))
            if action == "status":
                status = msgspec.json.decode(body, type=_Status)
                api.emit_status(
                    pnid,
                    status.id,
                    status.status,
                    recipient=status.recipient_id,
                    errors=status.errors,
                    repeat=status.repeat,
                )
                return json_response(202, b"{}")
            if action == "webhook":
                raw = msgspec.json.decode(body, type=_Value)
                api.emit_value(pnid, raw.value, repeat=raw.repeat)
                return json_response(202, b"{}")
            if action == "templates":
                api.register_template(pnid, msgspec.json.decode(body, type=CloudTemplate))
                return json_response(201, b"{}")
            if action == "revoke":
                api.revoke_token(pnid, msgspec.json.decode(body or b"{}", type=_Revoke).token)
                return json_response(200, b"{}")
    except KeyError:
        return graph_error(404, 100, "Invalid parameter", f"No Cloud number {parts[0][:40]!r}")
    except (msgspec.DecodeError, ValueError, LookupError) as exc:
        return _bad(str(exc))
    return graph_error(404, 100, "Unknown path components", f"{method} /_sim/cloud/{path[:80]}")
