"""The control API under ``/_sim/``: what tests, benches and operators do *to* the simulator.

JSON in, JSON out, same error envelope as the On-Prem API:

- ``GET  /_sim/counters``                      -> ``{"numbers": {"+1555...": {counters}}}``
- ``GET  /_sim/received?number=%2B1555...``     -> ``{"number", "messages": [{recipient,type,content,id}]}``
- ``GET  /_sim/senders?number=%2B1555...``      -> ``{"number", "runs": [{agent,first,last,count}]}``: who
  sent (User-Agent), in arrival order, one run per stretch of sends from one client
  (``&limit=N`` keeps the last N)
- ``POST /_sim/clock   {"advance": seconds}``   -> ``{"now": wall-clock seconds}``
- ``POST /_sim/inbound {"number","from", one of "body" | "media":{"mime_type","data"(base64),...}
  | "location":{latitude,longitude,name?,address?} | "contacts":[...] | "button":{text,payload}
  | "interactive":{type,button_reply|list_reply}, "type"? (sticker/voice with media), "context"?,
  "profile_name"?}`` -> ``{"messages":[{"id"}], "media_id"?}``
- ``POST /_sim/status {"number","id","status","recipient_id"?,"errors"?,"repeat"?}`` -> 202: one status
  webhook now, for any path (out of order, redelivered ``repeat`` times, ``failed`` with any code,
  ``deleted``, a status the platform adds later)
- ``POST /_sim/webhook {"number","body":{...},"repeat"?}`` -> 202: post ``body`` as it is (a shape
  recorded from the real platform: Flows replies, unknown types, ``errors`` arrays...)
- ``POST /_sim/inbound`` takes ``"repeat"`` too (a redelivered customer message) and
  ``"interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "..."}}`` (a Flows reply);
  a voice note is ``"media": {"mime_type": "audio/ogg; codecs=opus", ...}, "type": "voice"``
- ``POST /_sim/reset``                          -> zero counters, forget received messages
- ``POST /_sim/numbers {SimNumber fields}``     -> 201 ``{"number", "endpoint"}``
- ``DELETE /_sim/numbers/{digits}``             -> stop serving a number
- ``GET  /_sim/numbers/{digits}/account``      -> its registration: ``{"registered", "code", "method"}``
  (the code ``POST /v1/account`` sent by SMS or voice)
- ``GET  /_sim/faults`` -> ``{"plans": {key: FaultPlan}, "injected": {key: {kind: n}}}``
- ``PUT  /_sim/faults/{digits}[~endpoint] {FaultPlan}`` -> inject faults for a number (or one endpoint)
- ``DELETE /_sim/faults[/{key}]``               -> stop injecting (everywhere, or for one key)
- ``POST /_sim/faults/{digits}/revoke``         -> revoke the number's tokens early: ``{"revoked": n}``
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import msgspec

from dispatcher.simulator import errors
from dispatcher.simulator.config import SimNumber
from dispatcher.simulator.errors import ApiError
from dispatcher.simulator.exchange import SimResponse, error_response, json_response
from dispatcher.simulator.faults import decode_plan, split_prefix
from dispatcher.simulator.messages import decode_body
from dispatcher.simulator.wire import (
    ClockResponse,
    InboundResult,
    MessageId,
    MetaOnly,
    NumberAdded,
    ReceivedItem,
    ReceivedResponse,
    decode_clock,
    decode_inbound,
    decode_status,
    decode_webhook,
    encode,
)

if TYPE_CHECKING:
    from dispatcher.simulator.core import Simulator

_decode_number = msgspec.json.Decoder(SimNumber).decode
_OK = encode(MetaOnly())


def handle(sim: Simulator, method: str, route: str, query: str, body: bytes) -> SimResponse:
    """Answer ``method /_sim/{route}?{query}``."""
    try:
        return _route(sim, method, route, query, body)
    except ApiError as exc:
        return error_response(exc)
    except KeyError as exc:
        return error_response(errors.not_found(str(exc.args[0]) if exc.args else "not found"))


def _route(sim: Simulator, method: str, route: str, query: str, body: bytes) -> SimResponse:
    match method, route:
        case "GET", "counters":
            return json_response(200, encode({"numbers": sim.all_counters()}))
        case "GET", "received":
            return _received(sim, parse_qs(query))
        case "GET", "senders":
            return _senders(sim, parse_qs(query))
        case "POST", "clock":
            return _clock(sim, body)
        case "POST", "inbound":
            return _inbound(sim, body)
        case "POST", "status":
            return _status(sim, body)
        case "POST", "webhook":
            return _webhook(sim, body)
        case "POST", "reset":
            sim.reset()
            return json_response(200, _OK)
        case "POST", "numbers":
            return _add_number(sim, body)
        case "GET", "faults":
            listing = {"plans": sim.faults.plans(), "injected": sim.faults.injected}
            return json_response(200, msgspec.json.encode(listing))
        case "DELETE", "faults":
            sim.faults.clear()
            return json_response(200, _OK)
        case "POST", _ if route.startswith("faults/") and route.endswith("/revoke"):
            revoked = sim.revoke_tokens(route.removeprefix("faults/").removesuffix("/revoke"))
            return json_response(200, msgspec.json.encode({"revoked": revoked}))
        case "PUT", _ if route.startswith("faults/"):
            return _set_faults(sim, route.removeprefix("faults/"), body)
        case "DELETE", _ if route.startswith("faults/"):
            sim.faults.clear(_fault_key(sim, route.removeprefix("faults/")))
            return json_response(200, _OK)
        case "GET", _ if route.startswith("numbers/") and route.endswith("/account"):
            account = sim.account(route.removeprefix("numbers/").removesuffix("/account"))
            state = {"registered": account.registered, "code": account.code, "method": account.method}
            return json_response(200, msgspec.json.encode(state))
        case "DELETE", _ if route.startswith("numbers/"):
            sim.remove_number(route.removeprefix("numbers/"))
            return json_response(200, _OK)
    raise errors.not_found(f"No control route {method} /_sim/{route}")


def _fault_key(sim: Simulator, key: str) -> str:
    """``digits`` or ``digits~endpoint`` of a served number; else 404/400."""
    digits, endpoint = split_prefix(key)
    if "+" + digits.removeprefix("+") not in sim.numbers():
        raise errors.not_found(f"{digits!r} is not simulated")
    if endpoint is not None and not (endpoint.isascii() and endpoint.isdigit()):
        raise errors.invalid(f"endpoint must be a number: {endpoint!r}")
    return digits.removeprefix("+") + ("" if endpoint is None else f"~{endpoint}")


def _set_faults(sim: Simulator, key: str, body: bytes) -> SimResponse:
    key = _fault_key(sim, key)
    plan = decode_body(decode_plan, body)
    sim.faults.set(key, plan)
    return json_response(200, msgspec.json.encode({"key": key, "plan": plan}))


def _senders(sim: Simulator, params: dict[str, list[str]]) -> SimResponse:
    number = params.get("number", [""])[0]
    if not number:
        raise errors.missing("Query parameter 'number' is required")
    number = "+" + number.strip().removeprefix("+")
    return json_response(200, msgspec.json.encode({"number": number, "runs": sim.senders(number)}))


def _received(sim: Simulator, params: dict[str, list[str]]) -> SimResponse:
    number = params.get("number", [""])[0]
    if not number:
        raise errors.missing("Query parameter 'number' is required")
    items = [ReceivedItem(*entry) for entry in sim.received(number)]
    limit = params.get("limit")
    if limit:
        try:
            keep = int(limit[0])
        except ValueError as exc:
            raise errors.invalid(f"limit must be an integer: {limit[0]!r}") from exc
        items = items[-keep:] if keep > 0 else []
    number = "+" + number.strip().removeprefix("+")
    return json_response(200, encode(ReceivedResponse(number=number, messages=items)))


def _clock(sim: Simulator, body: bytes) -> SimResponse:
    advance = decode_body(decode_clock, body).advance
    try:
        now = sim.advance_clock(advance)
    except TypeError as exc:
        raise ApiError(409, errors.INVALID_REQUEST, str(exc)) from exc
    return json_response(200, encode(ClockResponse(now=now)))


def _inbound(sim: Simulator, body: bytes) -> SimResponse:
    req = decode_body(decode_inbound, body)
    objects = {
        "body": req.body,
        "media": req.media,
        "location": req.location,
        "contacts": req.contacts,
        "button": req.button,
        "interactive": req.interactive,
    }
    given = [name for name, value in objects.items() if value is not None]
    if len(given) != 1:
        raise errors.invalid(f"Give exactly one of {', '.join(objects)}")
    media_id: str | None = None
    try:
        if req.body is not None:
            msg_id = sim.inbound_text(
                req.number, req.sender, req.body, profile_name=req.profile_name, repeat=req.repeat
            )
        elif req.media is not None:
            try:
                data = base64.b64decode(req.media.data, validate=True)
            except binascii.Error as exc:
                raise errors.invalid("media.data must be base64") from exc
            msg_id, media_id = sim.inbound_media(
                req.number,
                req.sender,
                data,
                req.media.mime_type,
                caption=req.media.caption,
                filename=req.media.filename,
                profile_name=req.profile_name,
                kind=req.type,
                context=req.context,
                repeat=req.repeat,
            )
        else:
            kind = given[0]
            msg_id = sim.inbound_message(
                req.number,
                req.sender,
                kind,  # type: ignore[arg-type]
                location=req.location,
                contacts=req.contacts,
                button=req.button,
                interactive=req.interactive,
                context=req.context,
                profile_name=req.profile_name,
                repeat=req.repeat,
            )
    except ValueError as exc:
        raise errors.invalid(str(exc)) from exc
    except LookupError as exc:
        if isinstance(exc, KeyError):
            raise
        raise ApiError(409, errors.WEBHOOK_NOT_CONFIGURED, str(exc)) from exc
    return json_response(201, encode(InboundResult(messages=[MessageId(msg_id)], media_id=media_id)))


def _status(sim: Simulator, body: bytes) -> SimResponse:
    req = decode_body(decode_status, body)
    try:
        sim.emit_status(
            req.number, req.id, req.status, recipient=req.recipient_id, errors=req.errors, repeat=req.repeat
        )
    except LookupError as exc:
        if isinstance(exc, KeyError):
            raise
        raise ApiError(409, errors.WEBHOOK_NOT_CONFIGURED, str(exc)) from exc
    return json_response(202, _OK)


def _webhook(sim: Simulator, body: bytes) -> SimResponse:
    req = decode_body(decode_webhook, body)
    try:
        sim.emit_webhook(req.number, encode(req.body), repeat=req.repeat)
    except LookupError as exc:
        if isinstance(exc, KeyError):
            raise
        raise ApiError(409, errors.WEBHOOK_NOT_CONFIGURED, str(exc)) from exc
    return json_response(202, _OK)


def _add_number(sim: Simulator, body: bytes) -> SimResponse:
    number = decode_body(_decode_number, body)
    try:
        sim.add_number(number)
    except ValueError as exc:
        raise ApiError(409, errors.INVALID_PARAMETER, str(exc)) from exc
    endpoint = sim.endpoint_path(number.number)
    return json_response(201, encode(NumberAdded(number=number.number, endpoint=endpoint)))
