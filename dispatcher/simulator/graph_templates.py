"""The simulator's WABA message templates: Graph's template CRUD, Meta's review, its webhooks.

Served under Graph's paths (reference §1.1-1.3), with the WABA's token as bearer:

- ``GET    /{v}/{waba}/message_templates`` (``limit``, ``after``, ``name``, ``status``): pages of
  ``{"data", "paging": {"cursors": {"before", "after"}, "next"?}}``;
- ``POST   /{v}/{waba}/message_templates``: create -> ``{"id", "status": "PENDING", "category"}``,
  with Meta's checks (name, category, language, a body, placeholders {{1}}..{{n}} or named,
  examples for them, none at the body's start or end, a footer of at most 60, the same name
  and language only once);
- ``GET    /{v}/{template-id}``, ``POST /{v}/{template-id}`` (edit: back to PENDING),
  ``DELETE /{v}/{waba}/message_templates?name=..[&hsm_id=..]``.

Meta's review is the control API's (``control``): approve, reject (with a reason), pause,
disable, unpause, a new quality score or category, each posting Meta's webhook
(``message_template_status_update``, ``message_template_quality_update``,
``template_category_update``) signed to the webhook URL of the WABA's numbers. Sends of
the WABA's numbers are checked against these templates (``check_send``): only an
APPROVED one goes (``132001``; paused ``132015``, disabled ``132016``), with its
parameters (``132000`` count, ``132012`` format, ``132018`` a newline or tab in one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Annotated, Any, Final, final
from urllib.parse import parse_qs, urlencode

import attrs
import msgspec

from dispatcher.core.clock import WallClock
from dispatcher.simulator.cloud import graph_error
from dispatcher.simulator.exchange import SimRequest, SimResponse, json_response

PostChange = Callable[[str, str, dict[str, Any]], bool]
"""``post(waba, field, value) -> posted``: a WABA webhook to the URL of its numbers."""

_NAME: Final = re.compile(r"^[a-z0-9_]{1,512}$")
_PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_CATEGORIES: Final = ("AUTHENTICATION", "MARKETING", "UTILITY")
_BAD_PARAM: Final = re.compile(r"[\r\n\t]| {5}")
_encoder: Final = msgspec.json.Encoder()
DEFAULT_PAGE: Final = 25
TEMPLATE_LIMIT: Final = 250  # templates per WABA while the business portfolio is unverified (reference §1.2)
# A handle Meta's upload gives ("4::aW1hZ2U..."): one from elsewhere (pywa's examples) passes too; a
# URL or any other text in its place is refused, as Meta refuses it.
_HANDLE: Final = re.compile(r"^[0-9]::\S+$")
_UPLOAD_TYPES: Final = ("image/jpeg", "image/png", "video/mp4", "application/pdf")  # reference §1.2


class SimWaba(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A simulated WhatsApp Business Account: its id and system-user token."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")]
    access_token: Annotated[str, msgspec.Meta(min_length=1)]


@attrs.define(eq=False)
class _Template:
    id: str
    waba: str
    doc: dict[str, Any]  # as Graph lists it

    @property
    def status(self) -> str:
        return str(self.doc["status"])


@attrs.define(eq=False)
class _Waba:
    config: SimWaba
    templates: dict[str, _Template] = attrs.Factory(dict)  # by template id, in creation order


def _bad(details: str, subcode: int | None = None) -> SimResponse:
    return graph_error(400, 100, "Invalid parameter", details[:400], subcode=subcode)


@final
class GraphTemplates:
    """Every simulated WABA and its templates."""

    def __init__(self, *, wall_clock: WallClock, post_change: PostChange) -> None:
        self._wall = wall_clock
        self._post = post_change
        self._wabas: dict[str, _Waba] = {}
        self._owner: dict[str, str] = {}  # template id -> WABA id
        self._uploads: dict[str, tuple[int, bytearray]] = {}  # upload session -> (length, bytes so far)
        self._handles: set[str] = set()  # header example handles uploaded
        self._next_id = 1_689_556_908_129_835  # Meta-shaped ids (pywa's example)

    # -- WABAs ----------------------------------------------------------------------

    def add_waba(self, waba: SimWaba) -> None:
        waba = msgspec.convert(msgspec.to_builtins(waba), SimWaba)
        if waba.id in self._wabas:
            raise ValueError(f"WABA {waba.id} is already simulated")
        self._wabas[waba.id] = _Waba(waba)

    def remove_waba(self, waba_id: str) -> None:
        for template_id in self._wabas.pop(waba_id).templates:
            self._owner.pop(template_id, None)

    def wabas(self) -> list[SimWaba]:
        return [w.config for w in self._wabas.values()]

    def serves(self, path: str) -> bool:
        """``path`` (``/{v}/...``) is one of ours: a WABA's templates, a template, an app's upload
        (a WABA's other edges are the number management's)."""
        parts = path.strip("/").split("/")
        if len(parts) < 2:
            return False
        ref, rest = parts[1], parts[2:]
        if ref.startswith("upload:") or rest == ["uploads"]:
            return True
        return (ref in self._wabas and rest == ["message_templates"]) or (ref in self._owner and not rest)

    def templates(self, waba_id: str) -> list[dict[str, Any]]:
        return [t.doc for t in self._wabas[waba_id].templates.values()]

    # -- Graph requests -----------------------------------------------------------

    def respond(self, req: SimRequest, path: str, query: str) -> SimResponse:
        """``path``: ``/{v}/{waba}/message_templates`` or ``/{v}/{template-id}``."""
        parts = path.strip("/").split("/")
        args = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        ref = parts[1]
        if parts[2:] == ["uploads"] or ref.startswith("upload:"):
            return self._upload(req, parts, args)
        waba = self._wabas.get(ref) or self._wabas.get(self._owner.get(ref, ""))
        if waba is None:
            return _bad(f"Object with ID '{ref[:40]}' does not exist")
        auth = req.headers.get("authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {waba.config.access_token}".encode()):
            return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if ref == waba.config.id:
            if parts[2:] != ["message_templates"]:
                return graph_error(400, 100, "Unknown path components", f"/{'/'.join(parts[2:])[:60]}")
            if req.method == "GET":
                return self._list(waba, args, path, req.headers.get("host", "127.0.0.1"))
            if req.method == "POST":
                return self._create(waba, req.body)
            if req.method == "DELETE":
                return self._delete(waba, args)
        elif len(parts) == 2:
            template = waba.templates[ref]
            if req.method == "GET":
                return json_response(200, _encoder.encode(template.doc))
            if req.method == "POST":
                return self._edit(template, req.body)
        return graph_error(400, 100, "Unsupported request", f"{req.method} {path[:80]}")

    def _upload(self, req: SimRequest, parts: list[str], args: dict[str, str]) -> SimResponse:
        """Graph's resumable upload of a header example: a session, then its bytes from offset 0."""
        auth = req.headers.get("authorization", "")
        tokens = [f"Bearer {w.config.access_token}".encode() for w in self._wabas.values()]
        if not any(hmac.compare_digest(auth.encode(), t) for t in tokens):
            return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if req.method != "POST":
            return graph_error(400, 100, "Unsupported request", f"{req.method} upload")
        if parts[2:] == ["uploads"]:
            try:
                length = int(args["file_length"])
                kind, name = args["file_type"], args["file_name"]
            except (KeyError, ValueError):
                return _bad("file_name, file_length and file_type are required")
            if (
                kind not in ("image/jpeg", "image/png", "video/mp4", "application/pdf")
                or not 0 < length <= 100 << 20
            ):
                return _bad(f"file_type {kind[:40]} or file_length {length} is not accepted")
            session = "upload:" + base64.urlsafe_b64encode(f"{len(self._uploads)}:{name}".encode()).decode()
            self._uploads[session] = (length, bytearray())
            return json_response(200, _encoder.encode({"id": f"{session}?sig=ARZsim"}))
        found = self._uploads.get(parts[1])
        if found is None:
            return _bad(f"No upload session {parts[1][:60]}")
        length, data = found
        if req.headers.get("file_offset") != str(len(data)):
            return _bad(f"file_offset must be {len(data)}")
        data += req.body
        if len(data) != length:
            return _bad(f"{len(data)} bytes of {length}")
        handle = "4::" + base64.b64encode(hashlib.sha256(bytes(data)).digest()).decode()
        self._handles.add(handle)
        return json_response(200, _encoder.encode({"h": handle}))

    def _list(self, waba: _Waba, args: dict[str, str], path: str, host: str) -> SimResponse:
        try:
            limit = max(1, min(int(args.get("limit", DEFAULT_PAGE)), 1000))
            start = int(base64.urlsafe_b64decode(args["after"]).decode()) if args.get("after") else 0
        except ValueError:
            return _bad("limit and after must be numbers and cursors")
        found = [
            t.doc
            for t in waba.templates.values()
            if (not args.get("name") or t.doc["name"] == args["name"])
            and (not args.get("status") or t.status in args["status"].upper().split(","))
        ]
        page = found[start : start + limit]
        body: dict[str, Any] = {"data": page}
        if args.get("summary"):  # asked by pywa (every field it names, as Meta answers them)
            body["summary"] = {
                "total_count": len(found),
                "message_template_count": len(waba.templates),
                "message_template_limit": TEMPLATE_LIMIT,
                "are_translations_complete": True,
            }
        if page:
            cursors = {"before": _cursor(start), "after": _cursor(start + len(page))}
            body["paging"] = {"cursors": cursors}
            if start + len(page) < len(found):
                rest = {k: v for k, v in args.items() if k != "after"}
                rest.update(limit=str(limit), after=cursors["after"])
                body["paging"]["next"] = f"http://{host}{path}?{urlencode(rest)}"
        return json_response(200, _encoder.encode(body))

    def _create(self, waba: _Waba, body: bytes) -> SimResponse:
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return _bad("The request body is not valid JSON")
        if not isinstance(doc, dict):
            return _bad("The request body must be a JSON object")
        problem = _check_new(doc) or self._check_handles(doc)
        if problem is not None:
            return problem
        language = str(doc["language"])
        if any(
            t.doc["name"] == doc["name"] and t.doc["language"] == language for t in waba.templates.values()
        ):
            return _bad(f"Content in this language already exists: {doc['name']} ({language})", 2388024)
        template_id = str(self._next_id)
        self._next_id += 1
        category = str(doc["category"]).upper()
        stored: dict[str, Any] = {
            "id": template_id,
            "name": doc["name"],
            "language": language,
            "status": "PENDING",
            "category": category,
            "parameter_format": str(doc.get("parameter_format") or "POSITIONAL").upper(),
            "components": _as_listed(doc["components"], category),
            "quality_score": {"score": "UNKNOWN", "date": int(self._wall.now())},
        }
        waba.templates[template_id] = _Template(template_id, waba.config.id, stored)
        self._owner[template_id] = waba.config.id
        answer = {"id": template_id, "status": "PENDING", "category": category}
        return json_response(200, _encoder.encode(answer))

    def _check_handles(self, doc: dict[str, Any]) -> SimResponse | None:
        """A media header's example must be an upload's handle (not, say, the media's URL)."""
        for component in doc["components"]:
            if str(component.get("type", "")).upper() != "HEADER":
                continue
            if str(component.get("format", "TEXT")).upper() in ("TEXT", "LOCATION", "PRODUCT"):
                continue
            handles = (component.get("example") or {}).get("header_handle") or []
            if not handles or not (handles[0] in self._handles or _HANDLE.match(str(handles[0]))):
                return _bad("The media header needs an example: a handle from a resumable upload", 2388084)
        return None

    def _edit(self, template: _Template, body: bytes) -> SimResponse:
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return _bad("The request body is not valid JSON")
        if not isinstance(doc, dict):
            return _bad("The request body must be a JSON object")
        if template.status not in ("APPROVED", "REJECTED", "PAUSED"):
            return _bad(f"A template in status {template.status} cannot be edited", 2388025)
        if "components" in doc:
            template.doc["components"] = _as_listed(doc["components"], template.doc["category"])
        if "category" in doc and template.status != "APPROVED":
            template.doc["category"] = str(doc["category"]).upper()
        template.doc["status"] = "PENDING"
        return json_response(200, b'{"success":true}')

    def _delete(self, waba: _Waba, args: dict[str, str]) -> SimResponse:
        name = args.get("name")
        if not name:
            return _bad("The parameter name is required")
        doomed = [
            t
            for t in waba.templates.values()
            if t.doc["name"] == name and (not args.get("hsm_id") or t.id == args["hsm_id"])
        ]
        if not doomed:
            return _bad(f"Message template '{name[:64]}' not found", 2593002)
        for template in doomed:
            del waba.templates[template.id]
            self._owner.pop(template.id, None)
        return json_response(200, b'{"success":true}')

    # -- Meta's review (the control API) ----------------------------------------------------

    def find(self, waba_id: str, ref: str, language: str | None = None) -> _Template:
        """A template of ``waba_id`` by its id, or by name (and language)."""
        waba = self._wabas[waba_id]
        if ref in waba.templates:
            return waba.templates[ref]
        for template in waba.templates.values():
            if template.doc["name"] == ref and (language is None or template.doc["language"] == language):
                return template
        raise KeyError(ref)

    def seed(self, waba_id: str, doc: dict[str, Any]) -> str:
        """A template that exists at Meta already (made elsewhere), in ``doc``'s status (default APPROVED)."""
        waba = self._wabas[waba_id]
        problem = _check_new(doc)
        if problem is not None:
            raise ValueError(problem.body.decode())
        template_id = str(self._next_id)
        self._next_id += 1
        category = str(doc["category"]).upper()
        stored = {
            "id": template_id,
            "name": doc["name"],
            "language": doc["language"],
            "status": str(doc.get("status", "APPROVED")).upper(),
            "category": category,
            "parameter_format": str(doc.get("parameter_format") or "POSITIONAL").upper(),
            "components": _as_listed(doc["components"], category),
            "quality_score": {"score": "GREEN", "date": int(self._wall.now())},
        }
        waba.templates[template_id] = _Template(template_id, waba_id, stored)
        self._owner[template_id] = waba_id
        return template_id

    def review(
        self, waba_id: str, ref: str, action: str, *, reason: str = "", language: str | None = None
    ) -> dict[str, Any]:
        """Meta's decision on a template, and its webhook: ``approve``, ``reject`` (``reason``: Meta's,
        default INVALID_FORMAT), ``pause``, ``disable``, ``unpause`` (back to APPROVED)."""
        template = self.find(waba_id, ref, language)
        decisions: dict[str, tuple[str, str, dict[str, Any]]] = {
            "approve": ("APPROVED", "NONE", {}),
            "unpause": ("APPROVED", "NONE", {"other_info": {"title": "UNPAUSE", "description": "unpaused"}}),
            "reject": ("REJECTED", reason or "INVALID_FORMAT", {}),
            "pause": (
                "PAUSED",
                "NONE",
                {
                    "other_info": {
                        "title": reason or "FIRST_PAUSE",
                        "description": "Your template has been paused for 3 hours due to low quality.",
                    }
                },
            ),
            "disable": ("DISABLED", "NONE", {"disable_info": {"disable_date": int(self._wall.now())}}),
        }
        status, event_reason, extra = decisions[action]
        if action == "reject" and event_reason == "INVALID_FORMAT":
            extra = {
                "rejection_info": {
                    "reason": "Your template has parameters placed next to each other.",
                    "recommendation": "Separate parameters with descriptive text.",
                }
            }
        template.doc["status"] = status
        if action == "reject":
            template.doc["rejected_reason"] = event_reason
        value = {
            "event": status if action != "unpause" else "APPROVED",
            "message_template_id": int(template.id),
            "message_template_name": template.doc["name"],
            "message_template_language": template.doc["language"],
            "reason": event_reason,
            "message_template_category": template.doc["category"],
            **extra,
        }
        self._post(waba_id, "message_template_status_update", value)
        return template.doc

    def set_quality(
        self, waba_id: str, ref: str, score: str, *, language: str | None = None
    ) -> dict[str, Any]:
        template = self.find(waba_id, ref, language)
        previous = template.doc["quality_score"]["score"]
        template.doc["quality_score"] = {"score": score, "date": int(self._wall.now())}
        value = {
            "previous_quality_score": previous,
            "new_quality_score": score,
            "message_template_id": int(template.id),
            "message_template_name": template.doc["name"],
            "message_template_language": template.doc["language"],
        }
        self._post(waba_id, "message_template_quality_update", value)
        return template.doc

    def set_category(
        self, waba_id: str, ref: str, category: str, *, language: str | None = None
    ) -> dict[str, Any]:
        template = self.find(waba_id, ref, language)
        previous = template.doc["category"]
        template.doc["category"] = category.upper()
        template.doc["previous_category"] = previous
        value = {
            "message_template_id": int(template.id),
            "message_template_name": template.doc["name"],
            "message_template_language": template.doc["language"],
            "previous_category": previous,
            "new_category": category.upper(),
        }
        self._post(waba_id, "template_category_update", value)
        return template.doc

    # -- sends of the WABA's numbers ----------------------------------------------------------

    def has_waba(self, waba_id: str) -> bool:
        return waba_id in self._wabas

    def check_send(self, waba_id: str, template: Any) -> SimResponse | None:
        """A ``type: template`` send against the WABA's templates: None if Meta would take it."""
        if not isinstance(template, dict):
            return graph_error(400, 131009, "Parameter value is not valid", "template object is required")
        name = template.get("name")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        found = next(
            (
                t
                for t in self._wabas[waba_id].templates.values()
                if t.doc["name"] == name and t.doc["language"] == code
            ),
            None,
        )
        if found is None or found.status in ("PENDING", "REJECTED"):
            return graph_error(
                404,
                132001,
                "Template name does not exist in the translation",
                f"template name ({str(name)[:64]}) does not exist in {str(code)[:16]}",
            )
        if found.status == "PAUSED":
            return graph_error(
                400, 132015, "Template is Paused", f"Template {name} is paused due to low quality"
            )
        if found.status != "APPROVED":
            return graph_error(400, 132016, "Template is Disabled", f"Template {name} is {found.status}")
        return _check_params(found.doc, template.get("components") or [])


def _cursor(n: int) -> str:
    return base64.urlsafe_b64encode(str(n).encode()).decode()


def _placeholders(text: Any) -> list[str]:
    return list(dict.fromkeys(_PLACEHOLDER.findall(text))) if isinstance(text, str) else []


def _check_new(doc: dict[str, Any]) -> SimResponse | None:
    """Meta's checks of a new template (the common ones)."""
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        return _bad("name: lowercase letters, digits and underscores only, at most 512", 2388072)
    if str(doc.get("category", "")).upper() not in _CATEGORIES:
        return _bad(f"category must be one of {', '.join(_CATEGORIES)}")
    if not isinstance(doc.get("language"), str) or not doc["language"]:
        return _bad("The parameter language is required")
    components = doc.get("components")
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        return _bad("The parameter components is required")
    by_type = {str(c.get("type", "")).upper(): c for c in components}
    body = by_type.get("BODY")
    if body is None:
        return _bad("A template needs a BODY component", 2388047)
    named = str(doc.get("parameter_format") or "POSITIONAL").upper() == "NAMED"
    if str(doc.get("category", "")).upper() != "AUTHENTICATION":
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return _bad("The body text is required", 2388047)
        names = _placeholders(text)
        if names:
            if named and not all(re.match(r"^[a-z_][a-z0-9_]*$", n) for n in names):
                return _bad("Named parameters are lowercase letters, digits and underscores", 2388293)
            if not named and names != [str(i) for i in range(1, len(names) + 1)]:
                return _bad("Positional parameters must be {{1}}..{{n}} in order", 2388293)
            if text.strip().startswith("{{") or text.strip().endswith("}}"):
                return _bad("Variables can't be at the start or end of the template", 2388299)
            example = body.get("example") or {}
            if not (example.get("body_text_named_params") if named else example.get("body_text")):
                return _bad("The body has variables: give an example for each", 2388043)
    footer = by_type.get("FOOTER")
    if footer is not None and len(str(footer.get("text", ""))) > 60:
        return _bad("The footer is longer than 60 characters", 2388073)
    buttons = by_type.get("BUTTONS", {}).get("buttons", [])
    if not isinstance(buttons, list) or len(buttons) > 10:
        return _bad("At most 10 buttons")
    return None


def _as_listed(components: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """Components as Graph lists them: an authentication template's body and button are Meta's own."""
    if category != "AUTHENTICATION":
        return components
    out: list[dict[str, Any]] = []
    for c in components:
        kind = str(c.get("type", "")).upper()
        if kind == "BODY":
            text = "*{{1}}* is your verification code."
            if c.get("add_security_recommendation"):
                text += " For your security, do not share this code."
            out.append(
                {
                    "type": "BODY",
                    "text": text,
                    "add_security_recommendation": bool(c.get("add_security_recommendation")),
                }
            )
        elif kind == "BUTTONS":
            out.append(
                {
                    "type": "BUTTONS",
                    "buttons": [
                        {
                            "type": "URL",
                            "text": b.get("text", "Copy code"),
                            "url": "https://www.whatsapp.com/otp/code/?otp_type=COPY_CODE&code_expiration_minutes=10&code=otp{{1}}",
                        }
                        for b in c.get("buttons", [])
                    ],
                }
            )
        else:
            out.append(c)
    return out


def _check_params(doc: dict[str, Any], given: list[Any]) -> SimResponse | None:
    """The parameters of a send against the template's components."""
    by_type = {str(c.get("type", "")).upper(): c for c in doc["components"]}
    named = doc.get("parameter_format") == "NAMED"
    sent: dict[str, list[dict[str, Any]]] = {}
    buttons: dict[int, dict[str, Any]] = {}
    for comp in given:
        if not isinstance(comp, dict):
            return graph_error(400, 131009, "Parameter value is not valid", "components[] must be objects")
        kind = str(comp.get("type", "")).lower()
        params = comp.get("parameters") or []
        for p in params:
            text = p.get("text") if isinstance(p, dict) else None
            if isinstance(text, str) and _BAD_PARAM.search(text):
                return graph_error(
                    400,
                    132018,
                    "There was an issue with the parameters in your template.",
                    "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
                )
        if kind == "button":
            buttons[int(comp.get("index", -1))] = comp
        else:
            sent[kind] = params
    for kind in ("header", "body"):
        expected = by_type.get(kind.upper())
        text = expected.get("text") if expected is not None else None
        wanted = _placeholders(text)
        if (
            kind == "header"
            and expected is not None
            and str(expected.get("format", "TEXT")).upper() != "TEXT"
        ):
            wanted = ["media"]
        params = sent.get(kind, [])
        if len(params) != len(wanted):
            return graph_error(
                400,
                132000,
                "Number of parameters does not match the expected number of params",
                f"{kind}: number of localizable_params ({len(params)}) does not match the expected number "
                f"of params ({len(wanted)})",
            )
        if (
            named
            and wanted != ["media"]
            and sorted(str(p.get("parameter_name")) for p in params) != sorted(wanted)
        ):
            return graph_error(
                400,
                132012,
                "Parameter format does not match format in the created template",
                f"{kind}: parameter_name must be {wanted}",
            )
    listed = (by_type.get("BUTTONS") or {}).get("buttons") or []
    for index, button in enumerate(listed):
        kind = str(button.get("type", "")).upper()
        needs = (kind == "URL" and _placeholders(button.get("url"))) or kind == "COPY_CODE"
        if needs and index not in buttons:
            return graph_error(
                400,
                132000,
                "Number of parameters does not match the expected number of params",
                f"button {index} ({kind}) needs a parameter",
            )
    return None
