"""Admin routes of the template registry: ``GET/POST /admin/v1/templates``.

The admin guard (``frontdoor/admin.py``) already requires the admin bearer
token on every ``/admin/`` path; these routes only translate. Shapes are the
ones documented in ``dispatcher/messages/templates.py``; errors are the admin API's
JSON errors (``code``, ``message``, ``more_info``, ``status``): 400 with 20001
for an invalid template, 409 with 20001 for a sid that exists.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec
import structlog
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.core import jsondecode
from dispatcher.core.template_file import NewTemplate, TemplateError
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.admin import PREFIX
from dispatcher.messages.templates import TemplateExistsError, TemplateList, TemplateRegistry

log = structlog.get_logger()

_ACCOUNT: Final = re.compile(r"^AC[0-9a-fA-F]{32}$")
_new_decoder: Final = msgspec.json.Decoder(NewTemplate)
_encoder: Final = msgspec.json.Encoder()


def _json(value: object, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type="application/json")


def register_template_routes(app: QuartTrio, registry: TemplateRegistry) -> None:
    @app.get(f"{PREFIX}/templates")
    async def list_templates() -> Response:
        account = request.args.get("account")
        if account is not None and not _ACCOUNT.match(account):
            raise TwilioError(400, 20001, "account: expected an account sid (AC + 32 hex digits)")
        return _json(TemplateList(registry.list(account)))

    @app.post(f"{PREFIX}/templates")
    async def add_template() -> Response:
        body: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
        try:
            new = jsondecode.decode(_new_decoder, body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise TwilioError(400, 20001, f"Invalid template: {exc}") from None
        try:
            template = await registry.add(new)
        except TemplateExistsError as exc:
            raise TwilioError(409, 20001, str(exc)) from None
        except TemplateError as exc:
            raise TwilioError(400, 20001, f"Invalid template: {exc}") from None
        log.info("admin.template_added", sid=template.sid, account=template.account, name=template.name)
        return _json(template, 201)
