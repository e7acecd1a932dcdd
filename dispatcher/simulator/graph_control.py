"""Control API of the simulator's Graph number management, under ``/_sim/graph/``.

- ``POST /_sim/graph/wabas``: ``{"id", "token", "app_secret", "callback_url"?, "token_type"?,
  "token_expires_at"?}``: a WhatsApp Business Account (``token_type: "USER"`` with an expiry
  plays a short-lived user token, as ``debug_token`` then says);
- ``GET  /_sim/graph/wabas/{waba-id}``: its subscription;
- ``POST /_sim/graph/wabas/{waba-id}/numbers``: ``{"number", "verified_name", "phone_number_id"?}``:
  a number added in WhatsApp Manager (not verified, not registered); answers ``{"id"}``;
- ``GET  /_sim/graph/numbers/{phone-number-id}``: its fields and state, with the
  ``verification_code`` the last ``request_code`` sent (what the SMS would say);
- ``POST /_sim/graph/numbers/{phone-number-id}/quality``: ``{"event", "tier"?, "legacy"?}``: Meta
  changes its tier (``TIER_2K``...) or throughput (``THROUGHPUT_UPGRADE``), or flags it: enforced
  at once and posted as ``phone_number_quality_update``;
- ``POST /_sim/graph/wabas/{waba-id}/webhook``: ``{"field", "value"}``: any account change (a shape
  recorded from Meta's docs), posted to the WABA's subscription, signed;
- ``POST /_sim/graph/versions``: ``{"expired": ["v21.0", ...]}``: calls to these versions are served
  by the next usable one, as Meta does after a version's end of life (``facebook-api-version``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from dispatcher.simulator.cloud import graph_error
from dispatcher.simulator.exchange import SimResponse, json_response
from dispatcher.simulator.graph_numbers import GraphNumbers, SimWaba
from dispatcher.simulator.graph_versions import GraphVersions

_encoder: Final = msgspec.json.Encoder()
_Id = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")]


class _Waba(msgspec.Struct, forbid_unknown_fields=True):
    id: _Id
    token: Annotated[str, msgspec.Meta(min_length=1)]
    app_secret: Annotated[str, msgspec.Meta(min_length=1)]
    callback_url: str | None = None
    token_type: str = "SYSTEM_USER"
    token_expires_at: int = 0


class _Number(msgspec.Struct, forbid_unknown_fields=True):
    number: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{4,14}$")]
    verified_name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    phone_number_id: _Id | None = None


class _Quality(msgspec.Struct, forbid_unknown_fields=True):
    event: Annotated[str, msgspec.Meta(pattern=r"^[A-Z_]{1,40}$")]
    tier: str | None = None
    legacy: bool = False


class _Change(msgspec.Struct, forbid_unknown_fields=True):
    field: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,64}$")]
    value: dict[str, Any]


class _Versions(msgspec.Struct, forbid_unknown_fields=True):
    expired: list[str]


def handle(graph: GraphNumbers, versions: GraphVersions, method: str, path: str, body: bytes) -> SimResponse:
    """``path`` is what follows ``/_sim/graph/``."""
    parts = path.strip("/").split("/")
    try:
        if parts == ["wabas"] and method == "POST":
            w = msgspec.json.decode(body, type=_Waba)
            graph.add_waba(
                SimWaba(w.id, w.token, w.app_secret, w.callback_url, w.token_type, w.token_expires_at)
            )
            return json_response(201, _encoder.encode({"id": w.id}))
        if parts == ["versions"] and method == "POST":
            versions.expire(msgspec.json.decode(body, type=_Versions).expired)
            return json_response(200, b"{}")
        if len(parts) == 2 and parts[0] == "wabas" and method == "GET":
            waba = graph.wabas[parts[1]]
            state = {"id": waba.id, "subscribed": waba.subscribed, "override_callback_uri": waba.override_url}
            return json_response(200, _encoder.encode(state))
        if len(parts) == 3 and parts[0] == "wabas" and method == "POST":
            if parts[2] == "numbers":
                n = msgspec.json.decode(body, type=_Number)
                phone = graph.add_phone(parts[1], n.number, n.verified_name, n.phone_number_id)
                return json_response(201, _encoder.encode({"id": phone.phone_number_id}))
            if parts[2] == "webhook":
                change = msgspec.json.decode(body, type=_Change)
                graph.post_account_change(parts[1], change.field, change.value)
                return json_response(202, b"{}")
        if len(parts) == 2 and parts[0] == "numbers" and method == "GET":
            phone = graph.phones[parts[1]]
            state = {
                **phone.fields(),
                "verification_code": phone.code,
                "registered": phone.registered,
                "pin_set": phone.pin is not None,
                "profile": phone.profile,
                "override_callback_uri": phone.override_url,
                "waba_id": phone.waba_id,
            }
            return json_response(200, _encoder.encode(state))
        if len(parts) == 3 and parts[0] == "numbers" and parts[2] == "quality" and method == "POST":
            q = msgspec.json.decode(body, type=_Quality)
            value = graph.quality_event(parts[1], q.event, q.tier, legacy=q.legacy)
            return json_response(202, _encoder.encode(value))
    except KeyError as exc:
        return graph_error(404, 100, "Invalid parameter", f"No such WABA or number: {str(exc)[:60]}")
    except (msgspec.DecodeError, ValueError) as exc:
        return graph_error(400, 100, "Invalid parameter", str(exc)[:300])
    return graph_error(404, 100, "Unknown path components", f"{method} /_sim/graph/{path[:80]}")
