"""Onboarding a Cloud API number, step by step, resumable: the service behind ``wadispatch numbers``.

The steps (``core.onboarding_state.STEPS``) and the Graph calls they make
(reference: templates-lifecycle-channels.md 2.1-2.4):

``add``           find the number in the WABA (``GET /{waba}/phone_numbers``) or add it
                  (``POST /{waba}/phone_numbers``): its phone number id;
``request_code``  ``POST /{id}/request_code`` (SMS or VOICE), unless Meta says it is verified;
``verify``        ``POST /{id}/verify_code`` with the code the operator received;
``register``      ``POST /{id}/register`` with the two-step PIN (sets it if there was none);
``subscribe``     ``POST /{waba}/subscribed_apps`` with an override callback URL pointing at this
                  daemon (kept if it already does), and the number's own override
                  (``POST /{id}`` ``webhook_configuration``) at its route here;
``profile``       ``POST /{id}/whatsapp_business_profile`` (optional, any time);
``check``         ``GET /{id}?fields=...``: registered and connected; its tier, throughput and quality
                  go to the account watch (the actor's limits);
``start``         its actor starts in this daemon, no restart needed.

Each command runs the steps it can (``add`` up to the code request, ``verify``
the code, ``register`` the rest), skips those done (state in LMDB), and stops at
the first failure, which it records and raises as ``StepFailed`` naming the step
and carrying Meta's error. Running it again resumes there. One operation per
number at a time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection
from typing import Final, Literal, final

import attrs
import msgspec
import structlog
import trio

from dispatcher.channels.graph import GraphClient, GraphError, Success
from dispatcher.core import number_watch
from dispatcher.core import onboarding_state as state
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.number_watch import NumberWatch
from dispatcher.core.onboarding_state import OnboardRecord, StepError
from dispatcher.ops import onprem_provisioning as onprem
from dispatcher.ops.onprem_provisioning import OnPremHandle

log = structlog.get_logger()

E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")
FIELDS: Final = (
    "id,display_phone_number,verified_name,code_verification_status,quality_rating,throughput,"
    "whatsapp_business_manager_messaging_limit,messaging_limit_tier,status,name_status,platform_type,"
    "is_pin_enabled"
)
PROFILE_FIELDS: Final = "about,address,description,email,profile_picture_url,websites,vertical"


class Throughput(msgspec.Struct, frozen=True):
    level: str = ""


class NumberFields(msgspec.Struct, frozen=True, kw_only=True):
    """A number as ``GET /{phone-number-id}`` (or a WABA's number list) describes it."""

    id: str = ""
    display_phone_number: str = ""
    verified_name: str = ""
    code_verification_status: str = ""
    quality_rating: str = ""
    throughput: Throughput | None = None
    whatsapp_business_manager_messaging_limit: str | None = None
    messaging_limit_tier: str | None = None
    status: str = ""
    name_status: str = ""
    platform_type: str = ""
    is_pin_enabled: bool | None = None

    @property
    def tier(self) -> str | None:
        """The messaging limit (the portfolio's since 2025; the deprecated per-number field otherwise)."""
        return self.whatsapp_business_manager_messaging_limit or self.messaging_limit_tier

    def watched(self, before: NumberWatch, now: float) -> NumberWatch:
        """``before`` updated with what these fields say."""
        return msgspec.structs.replace(
            before,
            quality=self.quality_rating or before.quality,
            messaging_tier=self.tier or before.messaging_tier,
            throughput_level=(self.throughput.level if self.throughput else None) or before.throughput_level,
            status=self.status or before.status,
            verified_name=self.verified_name or before.verified_name,
            flagged=self.status == "FLAGGED" if self.status else before.flagged,
            updated_at=now,
        )


class _PhoneList(msgspec.Struct):
    data: list[NumberFields] = []


class _Created(msgspec.Struct):
    id: str


class _App(msgspec.Struct):
    override_callback_uri: str | None = None


class _Apps(msgspec.Struct):
    data: list[_App] = []


class Profile(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A number's WhatsApp business profile (what customers see)."""

    about: str | None = None
    address: str | None = None
    description: str | None = None
    email: str | None = None
    vertical: str | None = None
    websites: list[str] | None = None
    profile_picture_url: str | None = None


class _Profiles(msgspec.Struct):
    data: list[Profile] = []


class StepReport(msgspec.Struct, kw_only=True, frozen=True):
    step: str
    outcome: Literal["done", "skipped", "failed", "waiting"]
    detail: str = ""


class OnboardStatus(msgspec.Struct, kw_only=True, frozen=True):
    """A number's onboarding: where it stands, what this command did, the last failure."""

    number: str
    account: str
    waba_id: str
    phone_number_id: str | None
    state: str
    done: list[str]
    steps: list[StepReport] = []
    error: StepError | None = None
    next: str | None = None  # what the operator runs next, if anything


class OnboardingError(Exception):
    """The request cannot start (unknown WABA, bad number, nothing to resume): a 4xx."""


class StepFailed(Exception):
    """A step failed: its name, Meta's error (or what was missing), and the status so far."""

    def __init__(self, step: str, message: str, status: OnboardStatus) -> None:
        super().__init__(f"step {step!r} failed: {message}")
        self.step = step
        self.status = status


@attrs.frozen
class WabaHandle:
    """What onboarding needs of a WhatsApp Business Account: its Graph client and secrets."""

    id: str
    account: str
    graph: GraphClient
    verify_token: Callable[[], str] = attrs.field(repr=False)


Activate = Callable[[OnboardRecord], Awaitable[str]]
Deactivate = Callable[[str], Awaitable[str]]
ApplyWatch = Callable[[str, NumberWatch], Awaitable[None]]


@final
class Onboarding:
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        waba: Callable[[str], WabaHandle | None],
        webhook_url: Callable[[str], str],
        activate: Activate,
        deactivate: Deactivate,
        apply_watch: ApplyWatch,
        onprem: Callable[[str], OnPremHandle | None],
    ) -> None:
        """``buckets``: each number's record lives in its bucket; ``waba``: a configured WABA by id;
        ``webhook_url``: a number's Cloud webhook URL here;
        ``activate``/``deactivate``: start/stop the number's actor (they say what they did);
        ``apply_watch``: store what Meta says of the number and apply it to its actor; ``onprem``:
        a configured On-Prem number's webapp (``ops.onprem_provisioning``)."""
        self._buckets = buckets
        self._wall = wall
        self._waba = waba
        self._webhook_url = webhook_url
        self._activate = activate
        self._deactivate = deactivate
        self._apply_watch = apply_watch
        self._onprem = onprem
        self._locks: dict[str, trio.Lock] = {}

    # -- reading ------------------------------------------------------------------------

    def record(self, number: str) -> OnboardRecord | None:
        return state.load(self._buckets.for_number(number), number)

    def records(self, buckets: Collection[int] | None = None) -> list[OnboardRecord]:
        """Every onboarding record, by number; ``buckets``: those of these buckets only."""
        stores = self._buckets.stores if buckets is None else [self._buckets.stores[i] for i in buckets]
        return sorted((r for s in stores for r in state.every(s)), key=lambda r: r.number)

    def status(self, record: OnboardRecord, steps: list[StepReport] | None = None) -> OnboardStatus:
        return OnboardStatus(
            number=record.number,
            account=record.account,
            waba_id=record.waba_id,
            phone_number_id=record.phone_number_id,
            state=record.state,
            done=[s for s in state.STEPS if record.is_done(s)],
            steps=steps or [],
            error=record.error,
            next=_next(record),
        )

    # -- the commands -------------------------------------------------------------------

    async def add(
        self,
        number: str,
        *,
        waba_id: str | None,
        account: str | None = None,
        verified_name: str = "",
        code_method: Literal["SMS", "VOICE"] = "SMS",
        cert: str | None = None,
        pin: str | None = None,
    ) -> OnboardStatus:
        """Steps ``add`` and ``request_code`` (skipped for a number Meta already verified).

        Without ``waba_id``: an On-Prem number of the config, registered on its webapp with the
        certificate ``cert`` (and its two-step ``pin``, if it has one)."""
        if not E164.match(number):
            raise OnboardingError(f"number: expected E.164 like +15550001111, got {number!r}")
        if waba_id is None:
            return await self._add_onprem(number, cert, code_method, pin)
        waba = self._handle(waba_id)
        if account is not None and account != waba.account:
            raise OnboardingError(f"waba: WABA {waba_id} belongs to account {waba.account}, not to {account}")
        async with self._lock(number):
            record = self.record(number)
            if record is not None and record.waba_id != waba_id:
                raise OnboardingError(
                    f"{number} is being onboarded in WABA {record.waba_id}; remove it first"
                )
            if record is None:
                record = OnboardRecord(
                    number=number,
                    account=waba.account,
                    waba_id=waba_id,
                    verified_name=verified_name,
                    created_at=self._wall.now(),
                )
            run = _Run(self, record)
            fields = await run.step(state.ADD, lambda: self._find_or_add(waba, run.record, verified_name))
            if fields is not None and fields.code_verification_status == "VERIFIED":
                run.skip(state.REQUEST_CODE, "already verified at Meta")
                run.skip(state.VERIFY, "already verified at Meta")
            else:  # asked again while not verified: a new code (the last may have expired)
                again = not run.record.is_done(state.VERIFY)
                await run.step(
                    state.REQUEST_CODE, lambda: self._request_code(waba, run.record, code_method), again=again
                )
            return await run.finish()

    async def verify(self, number: str, code: str) -> OnboardStatus:
        """Step ``verify``: the code Meta sent by SMS or voice."""
        code = code.strip().replace("-", "")
        if not code.isdigit():
            raise OnboardingError("code: the digits Meta sent (e.g. 123456)")
        handle = self._onprem_record(number)
        if handle is not None:
            return await self._verify_onprem(handle, code)
        async with self._lock(number):
            record, waba = self._resume(number)
            run = _Run(self, record)
            if not record.is_done(state.REQUEST_CODE) and not record.is_done(state.VERIFY):
                raise OnboardingError(f"{number}: no code was requested; run 'numbers add' first")
            await run.step(state.VERIFY, lambda: self._verify(waba, run.record, code))
            return await run.finish()

    async def register(self, number: str, pin: str | None) -> OnboardStatus:
        """Steps ``register``, ``subscribe``, ``check`` and ``start``: the number sends from here on.
        (On-Prem: its webhook settings and health; it registered with ``add``, no PIN here.)"""
        handle = self._onprem_record(number)
        if handle is not None:
            return await self._register_onprem(handle)
        if pin is None or not re.fullmatch(r"[0-9]{6}", pin):
            raise OnboardingError(
                "pin: the two-step verification PIN is 6 digits (--pin-file, $WADISPATCH_PIN)"
            )
        async with self._lock(number):
            record, waba = self._resume(number)
            if not record.is_done(state.VERIFY):
                raise StepFailed(
                    state.VERIFY,
                    "the number is not verified yet: run 'numbers verify' with the code Meta sent",
                    self.status(record),
                )
            run = _Run(self, record)
            await run.step(state.REGISTER, lambda: self._register(waba, run.record, pin))
            await run.step(state.SUBSCRIBE, lambda: self._subscribe(waba, run.record))
            await run.step(state.CHECK, lambda: self._check(waba, run.record), again=True)
            await run.step(state.START, lambda: self._start(run.record), again=True)
            return await run.finish()

    async def profile(self, number: str, update: Profile | None) -> Profile:
        """Set the business profile (fields given in ``update``), then read it back from Meta."""
        if self._onprem_record(number) is not None:
            raise OnboardingError(
                f"{number}: the On-Prem profile endpoints are not confirmed; set it in the webapp"
            )
        async with self._lock(number):
            record, waba = self._resume(number)
            pnid = _pnid(record)
            run = _Run(self, record)
            if update is not None:
                body = {"messaging_product": "whatsapp", **msgspec.to_builtins(update)}

                async def post() -> str:
                    await _succeeded(waba.graph.post(f"{pnid}/whatsapp_business_profile", Success, json=body))
                    return "profile set: " + ", ".join(k for k in body if k != "messaging_product")

                await run.step(state.PROFILE, post, again=True)
                await run.finish()
            found = await waba.graph.get(
                f"{pnid}/whatsapp_business_profile", _Profiles, params={"fields": PROFILE_FIELDS}
            )
            return found.data[0] if found.data else Profile()

    async def remove(self, number: str, *, deregister: bool = False) -> OnboardStatus:
        """Stop the number's actor (its outbox stays in LMDB), optionally deregister it at Meta,
        and forget its onboarding."""
        async with self._lock(number):
            record = self.record(number)
            if record is None:
                raise OnboardingError(f"{number} is not onboarded here")
            steps = [StepReport(step="stop", outcome="done", detail=await self._deactivate(number))]
            waba = self._waba(record.waba_id)
            if deregister and record.phone_number_id is not None and waba is not None:
                try:
                    await _succeeded(waba.graph.post(f"{record.phone_number_id}/deregister", Success))
                except GraphError as exc:
                    failed = msgspec.structs.replace(
                        record, error=_error("deregister", exc, self._wall.now())
                    )
                    await self.save(failed)
                    steps.append(StepReport(step="deregister", outcome="failed", detail=str(exc)))
                    raise StepFailed("deregister", str(exc), self.status(failed, steps)) from exc
                steps.append(StepReport(step="deregister", outcome="done", detail="deregistered at Meta"))
            await self._buckets.for_number(number).write(state.delete(number))
            log.info("onboarding.removed", number=number, deregistered=deregister)
            return OnboardStatus(
                number=number,
                account=record.account,
                waba_id=record.waba_id,
                phone_number_id=record.phone_number_id,
                state="removed",
                done=[],
                steps=steps,
            )

    # -- On-Prem ------------------------------------------------------------------------

    def _onprem_record(self, number: str) -> OnPremHandle | None:
        """The webapp of ``number`` if it is being onboarded as an On-Prem number."""
        record = self.record(number)
        if record is None or record.waba_id:
            return None
        handle = self._onprem(number)
        if handle is None:
            raise OnboardingError(f"{number} is no longer an On-Prem number of the config")
        return handle

    async def _add_onprem(self, number: str, cert: str | None, method: str, pin: str | None) -> OnboardStatus:
        handle = self._onprem(number)
        if handle is None:
            raise OnboardingError(
                f"{number}: give --waba for a Cloud number, or configure it in [[numbers]] as On-Prem"
            )
        if not cert:
            raise OnboardingError(f"{number}: an On-Prem number registers with its certificate (--cert-file)")
        if pin is not None and not re.fullmatch(r"[0-9]{6}", pin):
            raise OnboardingError("pin: the two-step verification PIN is 6 digits")
        async with self._lock(number):
            record = self.record(number) or OnboardRecord(
                number=number, account=handle.account, waba_id="", created_at=self._wall.now()
            )
            run = _Run(self, record)
            cc, local = _split(number)
            sent: list[bool] = []

            async def register() -> str:
                sent.append(await onprem.register_account(handle, cc, local, cert, method.lower(), pin))
                return "account registration sent to the webapp (POST /v1/account)"

            await run.step(state.ADD, register, again=not record.is_done(state.VERIFY))
            if sent and not sent[0]:
                run.skip(state.REQUEST_CODE, "the webapp says the number is registered already")
                run.skip(state.VERIFY, "the webapp says the number is registered already")
            elif sent:
                run.done(state.REQUEST_CODE, f"code sent by {method.upper()}")
            return await run.finish()

    async def _verify_onprem(self, handle: OnPremHandle, code: str) -> OnboardStatus:
        async with self._lock(handle.number):
            record = self.record(handle.number)
            assert record is not None

            async def verify() -> str:
                await onprem.verify_account(handle, code)
                return "code verified (POST /v1/account/verify)"

            run = _Run(self, record)
            await run.step(state.VERIFY, verify)
            return await run.finish()

    async def _register_onprem(self, handle: OnPremHandle) -> OnboardStatus:
        async with self._lock(handle.number):
            record = self.record(handle.number)
            assert record is not None
            if not record.is_done(state.VERIFY):
                raise StepFailed(
                    state.VERIFY,
                    "not registered yet: run 'numbers verify' with the code",
                    self.status(record),
                )
            run = _Run(self, record)
            run.skip(state.REGISTER, "On-Prem: registered by the account step")

            async def settings() -> str:
                await onprem.set_webhook(handle)
                return "the webapp's webhooks point at this daemon (PATCH /v1/settings/application)"

            async def health() -> str:
                found = await onprem.gateway_status(handle)
                if "connected" not in found:
                    raise _Missing(f"gateway_status {', '.join(found) or 'unknown'}: no node is connected")
                return f"gateway_status {', '.join(found)}"

            await run.step(state.SUBSCRIBE, settings, again=True)
            await run.step(state.CHECK, health, again=True)
            await run.step(state.START, lambda: self._activate(run.record), again=True)
            return await run.finish()

    # -- the steps ----------------------------------------------------------------------

    async def _find_or_add(
        self, waba: WabaHandle, record: OnboardRecord, name: str
    ) -> tuple[str, NumberFields]:
        listed = await waba.graph.get(f"{waba.id}/phone_numbers", _PhoneList, params={"fields": FIELDS})
        digits = record.number.lstrip("+")
        for fields in listed.data:
            if re.sub(r"[^0-9]", "", fields.display_phone_number) == digits:
                record_id = fields.id
                return f"found in WABA {waba.id} as {record_id}", msgspec.structs.replace(
                    fields, id=record_id
                )
        if not name:
            raise _Missing(f"{record.number} is not in WABA {waba.id}: give --verified-name to add it")
        cc, local = _split(record.number)
        created = await waba.graph.post(
            f"{waba.id}/phone_numbers",
            _Created,
            json={"cc": cc, "phone_number": local, "verified_name": name},  # Meta's docs: "cc"
        )
        fields = NumberFields(id=created.id, display_phone_number=digits, verified_name=name)
        return f"added to WABA {waba.id} as {created.id}", fields

    async def _request_code(self, waba: WabaHandle, record: OnboardRecord, method: str) -> str:
        await _succeeded(
            waba.graph.post(
                f"{_pnid(record)}/request_code", Success, data={"code_method": method, "language": "en_US"}
            )
        )
        return f"code sent by {method}"

    async def _verify(self, waba: WabaHandle, record: OnboardRecord, code: str) -> str:
        await _succeeded(waba.graph.post(f"{_pnid(record)}/verify_code", Success, data={"code": code}))
        return "code verified"

    async def _register(self, waba: WabaHandle, record: OnboardRecord, pin: str) -> str:
        body = {"messaging_product": "whatsapp", "pin": pin}
        await _succeeded(waba.graph.post(f"{_pnid(record)}/register", Success, json=body))
        return "registered for the Cloud API (two-step PIN set)"

    async def _subscribe(self, waba: WabaHandle, record: OnboardRecord) -> str:
        url = self._webhook_url(record.number)
        verify = waba.verify_token()
        ours = url.rsplit("/", 1)[0] + "/"
        apps = await waba.graph.get(f"{waba.id}/subscribed_apps", _Apps)
        current = next((a.override_callback_uri for a in apps.data if a.override_callback_uri), None)
        if apps.data and current is not None and current.startswith(ours):
            waba_note = f"WABA already sends to {current}"
        else:
            body = {"override_callback_uri": url, "verify_token": verify}
            await _succeeded(waba.graph.post(f"{waba.id}/subscribed_apps", Success, json=body))
            waba_note = f"WABA subscribed, account webhooks to {url}"
        hook = {"webhook_configuration": {"override_callback_uri": url, "verify_token": verify}}
        await _succeeded(waba.graph.post(_pnid(record), Success, json=hook))
        return f"{waba_note}; the number's webhooks to {url}"

    async def _check(self, waba: WabaHandle, record: OnboardRecord) -> str:
        fields = await waba.graph.get(_pnid(record), NumberFields, params={"fields": FIELDS})
        if fields.platform_type and fields.platform_type != "CLOUD_API":
            raise _Missing(
                f"Meta says the number is not on the Cloud API (platform_type {fields.platform_type})"
            )
        watch = fields.watched(
            number_watch.load(self._buckets.for_number(record.number), record.number), self._wall.now()
        )
        await self._apply_watch(record.number, watch)
        throughput = fields.throughput.level if fields.throughput else "?"
        return (
            f"status {fields.status or '?'}, quality {fields.quality_rating or '?'}, "
            f"tier {fields.tier or '?'}, throughput {throughput}, name {fields.verified_name or '?'}"
        )

    async def _start(self, record: OnboardRecord) -> str:
        return await self._activate(record)

    # -- helpers ------------------------------------------------------------------------

    def _handle(self, waba_id: str) -> WabaHandle:
        waba = self._waba(waba_id)
        if waba is None:
            raise OnboardingError(f"waba: no WABA {waba_id} in [[wabas]] (with app_secret and verify_token)")
        return waba

    def _resume(self, number: str) -> tuple[OnboardRecord, WabaHandle]:
        record = self.record(number)
        if record is None:
            raise OnboardingError(f"{number} is not being onboarded: run 'numbers add' first")
        return record, self._handle(record.waba_id)

    def _lock(self, number: str) -> trio.Lock:
        return self._locks.setdefault(number, trio.Lock())

    @property
    def wall(self) -> WallClock:
        return self._wall

    async def save(self, record: OnboardRecord) -> None:
        await self._buckets.for_number(record.number).write(state.put(record))


class ActivationFailed(Exception):
    """The number could not be started, or the cluster not told of it (the ``start`` step fails)."""


class _Missing(Exception):
    """A step cannot go on for a reason of ours (not Meta's error)."""


@final
class _Run:
    """One command's run of steps over a record: each outcome written as it happens."""

    def __init__(self, onboarding: Onboarding, record: OnboardRecord) -> None:
        self._save = onboarding.save
        self._status = onboarding.status
        self._wall = onboarding.wall
        self.record = record
        self.reports: list[StepReport] = []

    def skip(self, step: str, why: str) -> None:
        if not self.record.is_done(step):
            now = self._wall.now()
            self.record = msgspec.structs.replace(
                self.record, done={**self.record.done, step: now}, notes={**self.record.notes, step: why}
            )
        self.reports.append(StepReport(step=step, outcome="skipped", detail=why))

    async def step(
        self, step: str, run: Callable[[], Awaitable[str | tuple[str, NumberFields]]], *, again: bool = False
    ) -> NumberFields | None:
        """Run ``step`` unless done (``again``: run it anyway: it only reads or is idempotent)."""
        record = self.record
        if record.is_done(step) and not again:
            self.reports.append(
                StepReport(step=step, outcome="skipped", detail=record.notes.get(step, "done"))
            )
            return None
        wall = self._wall
        log.info("onboarding.step", number=record.number, step=step)
        try:
            result = await run()
        except (GraphError, _Missing, onprem.OnPremError, ActivationFailed) as exc:
            error = _error(step, exc, wall.now())
            self.record = msgspec.structs.replace(record, error=error)
            await self._save(self.record)
            self.reports.append(StepReport(step=step, outcome="failed", detail=str(exc)))
            log.warning("onboarding.failed", number=record.number, step=step, error=str(exc))
            raise StepFailed(step, str(exc), self._status(self.record, self.reports)) from exc
        detail, fields = (result, None) if isinstance(result, str) else result
        changes: dict[str, object] = {
            "done": {**record.done, step: wall.now()},
            "notes": {**record.notes, step: detail},
            "error": None,
        }
        if fields is not None and fields.id:
            changes["phone_number_id"] = fields.id
        self.record = msgspec.structs.replace(record, **changes)
        await self._save(self.record)
        self.reports.append(StepReport(step=step, outcome="done", detail=detail))
        return fields

    def done(self, step: str, detail: str) -> None:
        """``step`` was achieved by another step's call (On-Prem: the account call sends the code)."""
        now = self._wall.now()
        self.record = msgspec.structs.replace(
            self.record, done={**self.record.done, step: now}, notes={**self.record.notes, step: detail}
        )
        self.reports.append(StepReport(step=step, outcome="done", detail=detail))

    async def finish(self) -> OnboardStatus:
        await self._save(self.record)
        return self._status(self.record, self.reports)


def _next(record: OnboardRecord) -> str | None:
    """The command the operator runs next."""
    n = record.number
    if not record.waba_id:  # On-Prem
        if not record.is_done(state.VERIFY):
            return f"wadispatch numbers verify {n} CODE   (the code sent by SMS or voice)"
        return None if record.is_done(state.CHECK) else f"wadispatch numbers register {n}"
    if not record.is_done(state.ADD) or not (
        record.is_done(state.REQUEST_CODE) or record.is_done(state.VERIFY)
    ):
        return f"wadispatch numbers add {n} --waba {record.waba_id}"
    if not record.is_done(state.VERIFY):
        return f"wadispatch numbers verify {n} CODE   (the code Meta sent)"
    if not record.is_done(state.START):
        return f"wadispatch numbers register {n} --pin-file PIN_FILE"
    return None


def _error(step: str, exc: Exception, now: float) -> StepError:
    if isinstance(exc, GraphError):
        return StepError(
            step=step, message=str(exc), code=exc.code, subcode=exc.subcode, fbtrace_id=exc.fbtrace_id, at=now
        )
    return StepError(step=step, message=str(exc), at=now)


def _pnid(record: OnboardRecord) -> str:
    if record.phone_number_id is None:
        raise _Missing("no phone number id yet: run 'numbers add' first")
    return record.phone_number_id


def _split(number: str) -> tuple[str, str]:
    """``+15550001111`` -> ``("1", "5550001111")``: the country code by ITU's prefix lengths."""
    digits = number.lstrip("+")
    one = {"1", "7"}
    two = {
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
        "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
        "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    }  # fmt: skip
    if digits[:1] in one:
        return digits[:1], digits[1:]
    if digits[:2] in two:
        return digits[:2], digits[2:]
    return digits[:3], digits[3:]


async def _succeeded(call: Awaitable[Success]) -> None:
    answer = await call
    if not answer.success:
        raise GraphError(200, "Meta answered without success: true")


__all__ = [
    "NumberFields",
    "OnboardStatus",
    "Onboarding",
    "OnboardingError",
    "Profile",
    "StepFailed",
    "StepReport",
    "WabaHandle",
]
