"""``wadispatch doctor``: for each Cloud number, what users most often get wrong, and the fix.

Checks, in the order a number fails them:

``token``       ``GET /debug_token``: valid, a system-user token (a user token from the App
                Dashboard lasts hours, a long-lived one ~60 days), its expiry, its scopes;
``registered``  ``GET /{id}?fields=...``: on the Cloud API, ``CONNECTED``, two-step PIN set,
                not flagged or restricted;
``subscribed``  ``GET /{waba}/subscribed_apps``: the app subscribed to the WABA (without it no
                webhook ever arrives), its override pointing at this daemon;
``webhook``     our own webhook URL, from here: ``GET ?hub.mode=subscribe&hub.verify_token=..&
                hub.challenge=..`` must echo the challenge (what Meta does when it is set);
``graph``       the Graph version: served by itself, not near its end of life;
``templates``   (when the daemon keeps a WABA's templates) the last sync is recent and good.

An On-Prem number: ``webapp`` (its login works, every node's ``gateway_status`` is connected)
and ``webhook`` (the webapp's settings post its webhooks to this daemon's route for it).

Each check is ``ok``, ``warn`` or ``fail`` with what was found and how to fix it; a
check that cannot run (Meta unreachable) is ``fail`` with the reason. Nothing is
changed: the doctor only reads.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Literal, final

import attrs
import httpx
import msgspec
import structlog

from dispatcher.channels.graph import GraphClient, GraphError
from dispatcher.core.clock import WallClock
from dispatcher.messages.catalog import TemplateCatalog
from dispatcher.messages.template_sync import TemplateSync
from dispatcher.ops import onprem_provisioning as onprem
from dispatcher.ops.graph_health import GraphHealth
from dispatcher.ops.onboarding import NumberFields
from dispatcher.ops.onprem_provisioning import OnPremHandle

log = structlog.get_logger()

Level = Literal["ok", "warn", "fail"]
SHORT_TOKEN: Final = 7 * 86_400.0  # a token expiring sooner than this is about to break sends


class Check(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    level: Level
    detail: str
    fix: str = ""


class Diagnosis(msgspec.Struct, kw_only=True, frozen=True):
    number: str
    checks: list[Check]

    @property
    def level(self) -> Level:
        levels = {c.level for c in self.checks}
        return "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"


class Report(msgspec.Struct, kw_only=True, frozen=True):
    numbers: list[Diagnosis]
    ok: bool


class _TokenData(msgspec.Struct, kw_only=True):
    is_valid: bool = False
    type: str = ""
    expires_at: int = 0
    data_access_expires_at: int = 0
    scopes: list[str] = []


class _Debug(msgspec.Struct):
    data: _TokenData


class _App(msgspec.Struct):
    override_callback_uri: str | None = None


class _Apps(msgspec.Struct):
    data: list[_App] = []


@attrs.frozen
class Target:
    """One Cloud number as the doctor sees it."""

    number: str
    phone_number_id: str
    waba_id: str | None
    graph: GraphClient
    token: Callable[[], str] = attrs.field(repr=False)
    verify_token: Callable[[], str] = attrs.field(repr=False)
    webhook_url: str
    pin_required: bool = True


@attrs.frozen
class OnPremTarget:
    """An On-Prem number as the doctor sees it: its webapp, through its actor."""

    handle: OnPremHandle

    @property
    def number(self) -> str:
        return self.handle.number


TemplatesCheck = Callable[[str], Check | None]
"""A WABA's template sync verdict (None: the daemon keeps none for it)."""


@final
class Doctor:
    def __init__(
        self,
        *,
        targets: Callable[[], list[Target]],
        onprem: Callable[[], list[OnPremTarget]] = list,
        client: httpx.AsyncClient,
        wall: WallClock,
        health: GraphHealth,
        templates: TemplatesCheck | None = None,
    ) -> None:
        """``client``: for the request to our own webhook URL."""
        self._targets = targets
        self._onprem = onprem
        self._client = client
        self._wall = wall
        self._health = health
        self._templates = templates

    async def examine(self, number: str | None = None) -> Report:
        """Every Cloud number (or only ``number``)."""
        targets = [t for t in self._targets() if number is None or t.number == number]
        found = [await self._one(t) for t in targets]
        for target in self._onprem():
            if number is None or target.number == number:
                found.append(await self._onprem_one(target))
        found.sort(key=lambda d: d.number)
        return Report(numbers=found, ok=all(d.level != "fail" for d in found))

    async def _onprem_one(self, target: OnPremTarget) -> Diagnosis:
        """An On-Prem number: its webapp answers (login, health) and posts its webhooks here."""
        handle, checks = target.handle, []
        register = f"wadispatch numbers register {handle.number}"
        try:
            nodes = await onprem.gateway_status(handle)
        except onprem.OnPremError as exc:
            fix = "check the number's endpoints, username and password (the login), and that the webapp runs"
            checks.append(Check(name="webapp", level="fail", detail=str(exc), fix=fix))
            return Diagnosis(number=handle.number, checks=checks)
        connected = nodes.count("connected")
        level: Level = "ok" if nodes and connected == len(nodes) else "warn" if connected else "fail"
        fix = (
            "" if level == "ok" else f"a node not connected: see its logs, or {register} after registering it"
        )
        checks.append(
            Check(name="webapp", level=level, detail=f"gateway_status {', '.join(nodes) or '?'}", fix=fix)
        )
        try:
            url = await onprem.webhook_url(handle)
        except onprem.OnPremError as exc:
            checks.append(Check(name="webhook", level="fail", detail=str(exc), fix=register))
            return Diagnosis(number=handle.number, checks=checks)
        if url != handle.webhook_url:
            shown = "none" if not url else url.split("/webhooks/onprem/")[0] + "/..."
            checks.append(
                Check(
                    name="webhook",
                    level="fail",
                    detail=f"the webapp posts its webhooks to {shown}",
                    fix=register,
                )
            )
        else:
            checks.append(Check(name="webhook", level="ok", detail="the webapp posts its webhooks here"))
        return Diagnosis(number=handle.number, checks=checks)

    async def _one(self, target: Target) -> Diagnosis:
        checks: list[Check] = []
        for run in (self._token, self._registered, self._subscribed, self._webhook, self._graph):
            checks.append(await _guarded(run, target))
        if self._templates is not None and target.waba_id is not None:
            templates = self._templates(target.waba_id)
            if templates is not None:
                checks.append(templates)
        return Diagnosis(number=target.number, checks=checks)

    async def _token(self, t: Target) -> Check:
        debug = await t.graph.get("debug_token", _Debug, params={"input_token": t.token()})
        data, now = debug.data, self._wall.now()
        fix_token = (
            "create a system user in Business Settings, give it the WABA with full control, generate a token "
            "with whatsapp_business_messaging and whatsapp_business_management (expiry: never), and put it "
            "in the credential file the config names"
        )
        if not data.is_valid:
            return Check(name="token", level="fail", detail="Meta says the token is not valid", fix=fix_token)
        missing = {"whatsapp_business_messaging", "whatsapp_business_management"} - set(data.scopes)
        expires = f"expires in {_days(data.expires_at - now)}" if data.expires_at else "never expires"
        detail = f"{data.type or 'unknown kind'} token, {expires}"
        if data.type and data.type != "SYSTEM_USER":
            return Check(
                name="token", level="fail", detail=f"{detail}: not a system-user token", fix=fix_token
            )
        if data.expires_at and data.expires_at - now < SHORT_TOKEN:
            return Check(name="token", level="fail", detail=detail, fix=fix_token)
        if missing and data.scopes:
            return Check(
                name="token",
                level="fail",
                detail=f"{detail}; missing {', '.join(sorted(missing))}",
                fix=fix_token,
            )
        if data.expires_at:
            return Check(
                name="token", level="warn", detail=detail, fix="renew it before then, or " + fix_token
            )
        return Check(name="token", level="ok", detail=detail)

    async def _registered(self, t: Target) -> Check:
        fields = await self._health.fields(t.graph, t.phone_number_id)
        register = f"wadispatch numbers register {t.number} --pin-file PIN_FILE"
        if fields.platform_type and fields.platform_type != "CLOUD_API":
            return Check(
                name="registered",
                level="fail",
                detail=f"not on the Cloud API (platform_type {fields.platform_type})",
                fix=register,
            )
        if fields.code_verification_status and fields.code_verification_status != "VERIFIED":
            return Check(
                name="registered",
                level="fail",
                detail=f"code_verification_status {fields.code_verification_status}",
                fix=f"wadispatch numbers add {t.number} --waba WABA, then numbers verify, numbers register",
            )
        if fields.status and fields.status != "CONNECTED":
            return Check(
                name="registered",
                level="fail",
                detail=f"status {fields.status} (Meta requires CONNECTED to send)",
                fix=_status_fix(fields),
            )
        if fields.is_pin_enabled is False and t.pin_required:
            return Check(
                name="registered",
                level="warn",
                detail="no two-step verification PIN: anyone with the SIM could move the number",
                fix=register,
            )
        return Check(name="registered", level="ok", detail=_summary(fields))

    async def _subscribed(self, t: Target) -> Check:
        if t.waba_id is None:
            return Check(
                name="subscribed",
                level="warn",
                detail="the number names no WABA: its subscription cannot be checked",
                fix='add waba = "<id>" to the number and the WABA to [[wabas]]',
            )
        apps = await t.graph.get(f"{t.waba_id}/subscribed_apps", _Apps)
        fix = (
            f"wadispatch numbers register {t.number} --pin-file PIN_FILE (its subscribe step), "
            f"or POST /{t.waba_id}/subscribed_apps"
        )
        if not apps.data:
            return Check(
                name="subscribed",
                level="fail",
                detail=f"no app is subscribed to WABA {t.waba_id}: no webhook (status, reply) arrives",
                fix=fix,
            )
        override = next((a.override_callback_uri for a in apps.data if a.override_callback_uri), None)
        ours = t.webhook_url.rsplit("/", 1)[0] + "/"
        if override is not None and not override.startswith(ours):
            return Check(
                name="subscribed",
                level="warn",
                detail=f"the WABA's webhooks go to {override}, not to this daemon",
                fix=fix,
            )
        where = override or "the app's callback URL"
        return Check(name="subscribed", level="ok", detail=f"subscribed; webhooks to {where}")

    async def _webhook(self, t: Target) -> Check:
        challenge = secrets.token_hex(8)
        params = {"hub.mode": "subscribe", "hub.verify_token": t.verify_token(), "hub.challenge": challenge}
        fix = "set [server] public_url to the https URL Meta reaches this daemon at (behind the proxy)"
        try:
            resp = await self._client.get(t.webhook_url, params=params, timeout=10.0)
        except httpx.HTTPError as exc:
            return Check(
                name="webhook", level="fail", detail=f"{t.webhook_url} unreachable: {exc!r}", fix=fix
            )
        if resp.status_code != 200 or resp.text != challenge:
            return Check(
                name="webhook",
                level="fail",
                detail=f"{t.webhook_url} answered {resp.status_code} to the verification handshake",
                fix=fix + "; the verify token Meta has must be the one configured",
            )
        https = t.webhook_url.startswith("https://")
        return Check(
            name="webhook",
            level="ok" if https else "warn",
            detail=f"{t.webhook_url} answers the handshake",
            fix="" if https else "Meta only calls https URLs: " + fix,
        )

    async def _graph(self, t: Target) -> Check:
        verdict = self._health.note(t.graph.version, t.graph.served_version)
        problem = verdict.problem()
        if problem is not None:
            return Check(
                name="graph",
                level="fail" if verdict.upgraded else "warn",
                detail=problem,
                fix="set graph_version ([[wabas]]) / cloud.api_version to a current version",
            )
        eol = f", works until {verdict.end_of_life}" if verdict.end_of_life else ""
        known = "" if verdict.known else " (not in our schedule: check Meta's changelog)"
        return Check(name="graph", level="ok", detail=f"{verdict.configured} served as itself{eol}{known}")


def templates_check(
    sync: TemplateSync, catalog: TemplateCatalog, wall: WallClock, intervals: Mapping[str, float]
) -> TemplatesCheck:
    """The ``templates`` check of a WABA the daemon keeps in sync: its last pull, good and recent."""

    def check(waba: str) -> Check | None:
        if waba not in sync.wabas():
            return None
        fix = f"wadispatch templates sync (the WABA {waba} token needs whatsapp_business_management)"
        failure = sync.failures.get(waba)
        if failure is not None:
            return Check(
                name="templates", level="fail", detail=f"the last template sync failed: {failure}", fix=fix
            )
        synced = sync.last_synced.get(waba)
        if synced is None:
            return Check(name="templates", level="warn", detail="not synced with Meta yet", fix=fix)
        age, interval = wall.now() - synced, intervals.get(waba, 0.0)
        found = catalog.templates([waba])
        approved = sum(1 for t in found if t.status == "APPROVED")
        detail = f"{len(found)} templates ({approved} approved), synced {age:.0f} s ago"
        if interval and age > 2 * interval + 60:
            return Check(
                name="templates", level="warn", detail=f"{detail}: late (every {interval:.0f} s)", fix=fix
            )
        return Check(name="templates", level="ok", detail=detail)

    return check


async def _guarded(run: Callable[[Target], Awaitable[Check]], target: Target) -> Check:
    name = run.__name__.lstrip("_")
    try:
        return await run(target)
    except GraphError as exc:
        return Check(name=name, level="fail", detail=str(exc), fix=_graph_fix(exc))


def _graph_fix(exc: GraphError) -> str:
    if exc.code == 190:
        return "the token is expired or revoked: generate a system-user token and update the credential file"
    if exc.code in (10, 200) or (exc.code is not None and 200 <= exc.code < 300):
        return "the token lacks access to this WABA or number: assign the asset to the system user"
    if exc.status == 0:
        return "Meta could not be reached from here: check DNS, the proxy and the firewall"
    return "see Meta's message above"


def _status_fix(fields: NumberFields) -> str:
    if fields.status in ("FLAGGED", "RESTRICTED", "RATE_LIMITED"):
        return "see the number's quality in WhatsApp Manager; sending more lowers it further"
    if fields.status in ("PENDING", "UNVERIFIED", "DISCONNECTED"):
        return "wadispatch numbers register NUMBER --pin-file PIN_FILE"
    return "see the number in WhatsApp Manager"


def _summary(fields: NumberFields) -> str:
    throughput = fields.throughput.level if fields.throughput else "?"
    return (
        f"{fields.status or 'registered'}, {fields.verified_name or '-'} ({fields.name_status or '?'}), "
        f"quality {fields.quality_rating or '?'}, tier {fields.tier or '?'}, throughput {throughput}"
    )


def _days(seconds: float) -> str:
    if seconds < 0:
        return "the past (expired)"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.0f} days"


__all__ = ["Check", "Diagnosis", "Doctor", "OnPremTarget", "Report", "Target", "templates_check"]
