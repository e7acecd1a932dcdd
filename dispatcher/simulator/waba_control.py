"""Control API of the simulator's WABAs and Meta's template review, under ``/_sim/wabas``.

- ``GET  /_sim/wabas``: the WABAs served; ``POST /_sim/wabas``: serve one more (``SimWaba`` JSON);
- ``GET  /_sim/wabas/{waba}/templates``: its templates as Graph lists them (every status);
- ``POST /_sim/wabas/{waba}/templates``: a template that exists at Meta already (Graph's create
  JSON, ``status`` optional, default APPROVED): ``{"id"}``;
- ``POST /_sim/wabas/{waba}/templates/{id or name}/{approve|reject|pause|disable|unpause}``
  (``{"reason"?, "language"?}``): Meta's decision, and its ``message_template_status_update``;
- ``POST .../{id or name}/quality`` ``{"score": "YELLOW"}``: ``message_template_quality_update``;
- ``POST .../{id or name}/category`` ``{"category": "MARKETING"}``: ``template_category_update``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from dispatcher.simulator.cloud import graph_error
from dispatcher.simulator.exchange import SimResponse, json_response
from dispatcher.simulator.graph_templates import GraphTemplates, SimWaba

_encoder: Final = msgspec.json.Encoder()
REVIEWS: Final = ("approve", "reject", "pause", "disable", "unpause")


class _Review(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""
    language: str | None = None
    score: str = ""
    category: str = ""


def handle(templates: GraphTemplates, method: str, path: str, body: bytes) -> SimResponse:
    """``path`` is what follows ``/_sim/wabas``."""
    parts = [p for p in path.strip("/").split("/") if p]
    try:
        if not parts:
            if method == "GET":
                return json_response(200, _encoder.encode(templates.wabas()))
            if method == "POST":
                templates.add_waba(msgspec.json.decode(body, type=SimWaba))
                return json_response(201, b"{}")
        elif len(parts) == 2 and parts[1] == "templates":
            if method == "GET":
                return json_response(200, _encoder.encode({"data": templates.templates(parts[0])}))
            if method == "POST":
                doc: dict[str, Any] = msgspec.json.decode(body, type=dict[str, Any])
                return json_response(201, _encoder.encode({"id": templates.seed(parts[0], doc)}))
        elif len(parts) == 4 and parts[1] == "templates" and method == "POST":
            waba, _, ref, action = parts
            review = msgspec.json.decode(body or b"{}", type=_Review)
            if action in REVIEWS:
                doc = templates.review(waba, ref, action, reason=review.reason, language=review.language)
            elif action == "quality" and review.score:
                doc = templates.set_quality(waba, ref, review.score.upper(), language=review.language)
            elif action == "category" and review.category:
                doc = templates.set_category(waba, ref, review.category, language=review.language)
            else:
                return graph_error(400, 100, "Invalid parameter", f"unknown review {action[:32]!r}")
            return json_response(200, _encoder.encode(doc))
    except KeyError as exc:
        return graph_error(404, 100, "Invalid parameter", f"not found: {exc}")
    except (msgspec.DecodeError, ValueError) as exc:
        return graph_error(400, 100, "Invalid parameter", str(exc)[:300])
    return graph_error(404, 100, "Unknown path components", f"{method} /_sim/wabas/{path[:80]}")
