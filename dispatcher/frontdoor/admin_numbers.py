"""Admin routes of number onboarding and the doctor (``wadispatch numbers``, ``wadispatch doctor``).

Under ``/admin/v1`` (the admin guard already requires the admin token):

- ``GET    /numbers``: every number being or having been onboarded, with its state (daemons that
  share no data root: each other owner is asked for its buckets' records, 503 if one cannot be);
- ``POST   /numbers``: ``{"number", "waba", "account"?, "verified_name"?, "code_method"?}``: add it
  (and have Meta send the verification code); an On-Prem number of the config: ``{"number",
  "cert", "code_method"?, "pin"?}`` (its webapp's account registration);
- ``POST   /numbers/{n}/verify``: ``{"code"}``;
- ``POST   /numbers/{n}/register``: ``{"pin"}``: register, subscribe the webhooks, check, start;
- ``GET|POST /numbers/{n}/profile``: the business profile (POST: the fields to set);
- ``DELETE /numbers/{n}[?deregister=true]``: stop its actor, forget it (and deregister it at Meta);
- ``GET    /doctor[?number=+1...]``: the checks and their fixes.

A step that fails answers 502 with Meta's error and the onboarding status
(``{"code", "message", "step", "status": {...}}``); a request that cannot start
(unknown WABA, bad number or code) 400; an unknown number 404; a removal the other daemons
of a cluster could not be told of 503. Every route about one number is answered by the
owner of its bucket (the front door forwards it there: ``routing``).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
import structlog
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.core import jsondecode
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.admin import PREFIX, normalize_number
from dispatcher.frontdoor.cluster_lists import PART_HEADER, ClusterLists, ListUnavailable
from dispatcher.ops.doctor import Doctor
from dispatcher.ops.onboarding import (
    ActivationFailed,
    Onboarding,
    OnboardingError,
    OnboardStatus,
    Profile,
    StepFailed,
)

log = structlog.get_logger()

_encoder: Final = msgspec.json.Encoder()


class AddNumber(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    number: Annotated[str, msgspec.Meta(max_length=32)]
    # A Cloud number's WABA; without it, an On-Prem number of the config (with its ``cert``).
    waba: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")] | None = None
    account: Annotated[str, msgspec.Meta(pattern=r"^AC[0-9a-fA-F]{32}$")] | None = None
    verified_name: Annotated[str, msgspec.Meta(max_length=256)] = ""
    code_method: Literal["SMS", "VOICE"] = "SMS"
    cert: Annotated[str, msgspec.Meta(max_length=16_384)] | None = None  # On-Prem: Business Manager's
    pin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")] | None = None  # On-Prem: its two-step PIN


class VerifyCode(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=4, max_length=16)]


class Register(msgspec.Struct, forbid_unknown_fields=True):
    pin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")] | None = None  # a Cloud number needs it


class Failure(msgspec.Struct, kw_only=True):
    code: int
    message: str
    step: str
    status: OnboardStatus
    more_info: str = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes"


class Onboarded(msgspec.Struct, kw_only=True):
    numbers: list[OnboardStatus]


_onboarded_decoder: Final = msgspec.json.Decoder(Onboarded)


def _json(value: object, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type="application/json")


async def _body(type: type[msgspec.Struct]) -> msgspec.Struct:
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    try:
        return jsondecode.decode(msgspec.json.Decoder(type), raw or b"{}")
    except msgspec.DecodeError as exc:
        raise TwilioError(400, 20001, f"Invalid request: {exc}") from None


def register_number_routes(
    app: QuartTrio, onboarding: Onboarding, doctor: Doctor, lists: ClusterLists | None = None
) -> None:
    """``lists``: the daemons share no data root, so the list asks each other owner for its numbers."""

    @app.errorhandler(OnboardingError)
    async def cannot_start(exc: OnboardingError) -> Response:
        return Response(TwilioError(400, 20001, str(exc)).body(), status=400, content_type="application/json")

    @app.errorhandler(ActivationFailed)
    async def not_told(exc: ActivationFailed) -> Response:  # a removal the cluster did not hear of
        response = Response(
            TwilioError(503, 20503, str(exc)).body(), status=503, content_type="application/json"
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(StepFailed)
    async def step_failed(exc: StepFailed) -> Response:
        return _json(Failure(code=20500, message=str(exc), step=exc.step, status=exc.status), 502)

    @app.get(f"{PREFIX}/numbers")
    async def list_numbers() -> Response:
        if lists is None:  # every bucket's live Store is here
            return _json(Onboarded(numbers=[onboarding.status(r) for r in onboarding.records()]))
        try:
            if (part := request.headers.get(PART_HEADER)) is not None:  # another daemon's list
                indexes = lists.part_buckets(part)
                return _json(Onboarded(numbers=[onboarding.status(r) for r in onboarding.records(indexes)]))
            local, remote = lists.plan("their numbers")
            parts = await lists.ask_owners(
                remote,
                request.path.encode(),
                request.headers.get("Authorization"),
                lambda body: _onboarded_decoder.decode(body).numbers,
                "their numbers",
            )
        except ListUnavailable as exc:
            response = Response(exc.body(), status=exc.status, content_type="application/json")
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        found = [onboarding.status(r) for r in onboarding.records(local)]
        found += [status for part in parts for status in part]
        return _json(Onboarded(numbers=sorted(found, key=lambda status: status.number)))

    @app.post(f"{PREFIX}/numbers")
    async def add_number() -> Response:
        body = await _body(AddNumber)
        assert isinstance(body, AddNumber)
        number = normalize_number(body.number)
        log.info("admin.number_add", number=number, waba=body.waba)
        status = await onboarding.add(
            number,
            waba_id=body.waba,
            account=body.account,
            verified_name=body.verified_name,
            code_method=body.code_method,
            cert=body.cert,
            pin=body.pin,
        )
        return _json(status, 201)

    @app.post(f"{PREFIX}/numbers/<number>/verify")
    async def verify_number(number: str) -> Response:
        body = await _body(VerifyCode)
        assert isinstance(body, VerifyCode)
        return _json(await onboarding.verify(normalize_number(number), body.code))

    @app.post(f"{PREFIX}/numbers/<number>/register")
    async def register_number(number: str) -> Response:
        body = await _body(Register)
        assert isinstance(body, Register)
        number = normalize_number(number)
        log.info("admin.number_register", number=number)
        return _json(await onboarding.register(number, body.pin))

    @app.get(f"{PREFIX}/numbers/<number>/profile")
    async def read_profile(number: str) -> Response:
        return _json(await onboarding.profile(normalize_number(number), None))

    @app.post(f"{PREFIX}/numbers/<number>/profile")
    async def set_profile(number: str) -> Response:
        body = await _body(Profile)
        assert isinstance(body, Profile)
        return _json(await onboarding.profile(normalize_number(number), body))

    @app.delete(f"{PREFIX}/numbers/<number>")
    async def remove_number(number: str) -> Response:
        number = normalize_number(number)
        deregister = request.args.get("deregister", "false").lower() in ("1", "true", "yes")
        log.info("admin.number_remove", number=number, deregister=deregister)
        if onboarding.record(number) is None:
            raise TwilioError(404, 20404, f"{number} is not onboarded here")
        return _json(await onboarding.remove(number, deregister=deregister))

    @app.get(f"{PREFIX}/doctor")
    async def examine() -> Response:
        wanted = request.args.get("number")
        number = normalize_number(wanted) if wanted else None
        report = await doctor.examine(number)
        if number is not None and not report.numbers:
            raise TwilioError(404, 20404, f"No Cloud number {number} is running here")
        return _json(report)
