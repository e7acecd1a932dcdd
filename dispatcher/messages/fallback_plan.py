"""A create's fallback plan: our extension parameters over the Messaging Service's and the number's.

Twilio has ``FallbackFrom`` (an SMS sender for RCS); we take the same name for any
fallback sender and add, Twilio-style: ``FallbackErrorCodes`` (comma-separated codes
that trigger it at once), ``FallbackAfter`` (seconds without the awaited status),
``FallbackAwait`` (``delivered``, the default, or ``sent``) and ``FallbackBody`` (the
fallback's text; default: the message's own, a template's with its values). Each
one given overrides the service's ``[services.fallback]`` key of the same meaning;
the window template comes from the service, else from the sender number. A
fallback message itself never has a plan: there is no third send.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from dispatcher.config import FALLBACK_MAX_AFTER, ServiceConfig
from dispatcher.core.directory import NumberInfo
from dispatcher.core.models import FallbackPlan
from dispatcher.core.params import invalid
from dispatcher.core.twilio import TwilioError

MAX_CODES: Final = 32
AWAITABLE: Final = ("delivered", "sent")
_CODE: Final = re.compile(r"^[0-9]{1,7}$")


@attrs.frozen
class FallbackRequest:
    """The fallback parameters of a create, as the form or JSON carried them."""

    from_: str | None = None
    error_codes: str | None = None
    after: str | None = None
    awaiting: str | None = None
    body: str | None = None

    def given(self) -> bool:
        return any(v is not None and v != "" for v in attrs.astuple(self))


NO_REQUEST: Final = FallbackRequest()


def parse_codes(value: str) -> list[int]:
    """``"63003, 63024"`` -> ``[63003, 63024]``; 20001 for anything else."""
    items = [item for item in re.split(r"[\s,]+", value.strip()) if item]
    if not items or len(items) > MAX_CODES or not all(_CODE.match(item) for item in items):
        raise invalid(
            f"FallbackErrorCodes {value!r} is invalid: give up to {MAX_CODES} error codes, "
            "comma-separated (e.g. 63003,63024)."
        )
    codes = [int(item) for item in items]
    if 0 in codes:
        raise invalid(f"FallbackErrorCodes {value!r} is invalid: 0 is not an error code.")
    return list(dict.fromkeys(codes))


def parse_after(value: str) -> float:
    """``FallbackAfter``: seconds, more than 0 and at most a day; 20001 otherwise."""
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = -1.0
    if not 0.0 < seconds <= FALLBACK_MAX_AFTER:  # NaN fails too
        raise invalid(
            f"FallbackAfter {value!r} is invalid: "
            f"give seconds, more than 0 and at most {FALLBACK_MAX_AFTER:g}."
        )
    return seconds


def plan(
    req: FallbackRequest,
    *,
    service: ServiceConfig | None,
    sender: NumberInfo,
    from_number: str,
    start: float,
    fallback_sender: str | None,
    max_body: int,
) -> FallbackPlan | None:
    """The plan of a create whose sender is ``sender`` and whose send time is ``start``.

    ``fallback_sender``: ``req.from_`` already parsed and checked to be a number of the
    account (the rules do that, with their codes). None when the create falls back on nothing.
    """
    configured = service.fallback if service is not None else None
    from_ = fallback_sender or (configured.from_ if configured is not None else None)
    codes = (
        parse_codes(req.error_codes)
        if req.error_codes
        else (list(configured.error_codes) if configured is not None else [])
    )
    after = parse_after(req.after) if req.after else (configured.after if configured is not None else None)
    awaiting = req.awaiting or (configured.await_ if configured is not None else "delivered")
    if awaiting not in AWAITABLE:
        raise invalid(f"FallbackAwait {awaiting!r} is invalid: give 'delivered' or 'sent'.")
    if req.awaiting and after is None:
        raise invalid("FallbackAwait needs FallbackAfter: how long to wait for that status.")
    body = req.body or None
    if body is not None:
        if body.isspace():
            raise invalid("FallbackBody is blank: give the fallback's text, or leave it out.")
        if len(body) > max_body:
            raise TwilioError(400, 21617, f"The FallbackBody exceeds the {max_body} character limit.")
    template: str | None = sender.window_template
    variable = sender.window_variable
    if configured is not None and configured.window_template is not None:
        template, variable = configured.window_template, configured.window_variable
    if from_ is None:
        if codes or after is not None or req.given():
            raise invalid("A fallback needs FallbackFrom: the number that sends it.")
        if template is None:
            return None
        return FallbackPlan(window_template=template, window_variable=variable)
    if from_ == from_number:
        raise invalid(
            f"FallbackFrom {from_} is the message's own sender: a fallback comes from another number."
        )
    if not codes and after is None:
        raise invalid("FallbackFrom needs FallbackErrorCodes or FallbackAfter: when to fall back.")
    return FallbackPlan(
        from_number=from_,
        error_codes=codes,
        due_at=None if after is None else start + after,
        awaiting=awaiting,
        body=body,
        window_template=template,
        window_variable=variable,
    )


def window_only(sender: NumberInfo) -> FallbackPlan | None:
    """The plan of a plain create (a batch's To/From/Body item): the number's window template, if any."""
    if sender.window_template is None:
        return None
    return FallbackPlan(window_template=sender.window_template, window_variable=sender.window_variable)
