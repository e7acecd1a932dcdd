"""Every route of the front door that reads a request body, in a daemon that serves them all.

Shared by the hostile-input tests (``test_frontdoor_errors``, ``test_frontdoor_limits``,
``test_frontdoor_property``): one config with On-Prem numbers authenticated by path
secret and by header, a signed Cloud number and the admin API, and for each route
the headers an authentic caller sends with a given body.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from dispatcher.config import Config
from dispatcher.core.store import DB_NAMES, Store
from dispatcher.frontdoor.cloud_routes import SIGNATURE_HEADER, signature
from tests.helpers.daemon import (
    ACCOUNT,
    ADMIN,
    ADMIN_SECTION,
    CLOUD,
    SECRET,
    TOKEN,
    messages_path,
    mixed_config,
    sandbox_config,
)

BASIC = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
HEADER_NUMBER = "15550000002"
HEADER_NAME = "X-Hub-Key"


def hostile_config(data_dir: Path, **server: Any) -> Config:
    """Number 1: path-secret webhooks; number 2: header webhooks; a Cloud number; the admin API.

    ``server`` replaces ``[server]`` settings (e.g. ``body_timeout=0.3``).
    """
    cfg = mixed_config(data_dir, extra_sections=ADMIN_SECTION)
    by_header = sandbox_config(
        data_dir, number_extra=f'webhook_auth = "header"\nwebhook_header = "{HEADER_NAME}"'
    )
    numbers = [cfg.numbers[0], by_header.numbers[1], *cfg.numbers[2:]]
    # No start-up read of the Cloud number's fields: its write would land while a test compares LMDB.
    watch = msgspec.structs.replace(cfg.watch, check_at_start=False)
    return msgspec.structs.replace(
        cfg, numbers=numbers, server=msgspec.structs.replace(cfg.server, **server), watch=watch
    )


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    headers: dict[str, str]
    webhook: bool = False  # answers {"error": ...} (WhatsApp's side), not Twilio's error shape
    signed: bool = False  # a Cloud webhook: X-Hub-Signature-256 of the body

    def headers_for(self, body: bytes) -> dict[str, str]:
        if not self.signed:
            return dict(self.headers)
        return {**self.headers, SIGNATURE_HEADER: signature(SECRET, body)}


CREATE_FORM = Route("create form", messages_path(), {"Authorization": BASIC, "Content-Type": FORM})
CREATE_JSON = Route("create json", messages_path(), {"Authorization": BASIC, "Content-Type": JSON})
UPDATE = Route("update", messages_path("SM" + "0" * 32), {"Authorization": BASIC, "Content-Type": JSON})
BATCH = Route("batch", "/v1/messages:batch", {"Authorization": BASIC, "Content-Type": JSON})
ONPREM_PATH = Route(
    "on-prem webhook (path secret)", "/webhooks/onprem/15550000001/hook-1-secret-0123", {}, webhook=True
)
ONPREM_HEADER = Route(
    "on-prem webhook (header secret)",
    f"/webhooks/onprem/{HEADER_NUMBER}",
    {HEADER_NAME: "hook-2-secret-0123"},
    webhook=True,
)
TEMPLATES = Route("admin templates", "/admin/v1/templates", {**ADMIN, "Content-Type": JSON})
CLOUD_HOOK = Route("cloud webhook", f"/webhooks/cloud/{CLOUD.lstrip('+')}", {}, webhook=True, signed=True)

BODY_ROUTES = (CREATE_FORM, CREATE_JSON, UPDATE, BATCH, ONPREM_PATH, ONPREM_HEADER, TEMPLATES, CLOUD_HOOK)

# A request changes these when it stores anything (``tokens`` only changes by the actors' logins).
WRITTEN_BY_REQUESTS = tuple(name for name in DB_NAMES if name != b"tokens")


def snapshot(store: Store) -> dict[bytes, int]:
    """Keys per named DB: equal before and after means the request stored nothing."""
    return {name: store.entries(name) for name in WRITTEN_BY_REQUESTS}


def assert_error_shape(route: Route, status: int, content_type: str, body: bytes) -> None:
    """A 4xx of ``route``: JSON in the route's error shape."""
    assert 400 <= status < 500, (route.name, status, body[:300])
    assert content_type.split(";")[0] == JSON, (route.name, content_type, body[:300])
    error = msgspec.json.decode(body)
    if route.webhook and "error" in error:
        assert isinstance(error["error"], str)
    else:
        assert error["status"] == status and error["code"] and error["message"], (route.name, error)
