"""Where a number's onboarding stands, kept in LMDB so every step is resumable.

``wadispatch numbers add|verify|register|profile`` each run some steps of
``ops.onboarding``; what each step achieved is recorded here as it completes
(the phone number id Meta gave, the code verified, the number registered, the
webhooks subscribed...), and the last failure with Meta's error. Running a
command again skips what is done and starts at the step that failed. Secrets
are never kept: the two-step PIN is given to ``register`` each time.

One record per number in the ``numbers`` DB under ``number NUL "onboard"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

import msgspec

from dispatcher.core.store import SEP, Store, WriteTxn, number_key

ONBOARD_KEY: Final = b"onboard"

# The steps, in order (``ops.onboarding`` runs them).
ADD: Final = "add"  # the number is in the WABA at Meta: its phone number id
REQUEST_CODE: Final = "request_code"  # a verification code was sent by SMS or voice
VERIFY: Final = "verify"  # the code was verified (code_verification_status VERIFIED)
REGISTER: Final = "register"  # registered for the Cloud API with the two-step PIN
SUBSCRIBE: Final = "subscribe"  # the app subscribed to the WABA, webhooks pointed at this daemon
PROFILE: Final = "profile"  # the business profile set (optional)
CHECK: Final = "check"  # the number's fields read back: connected, its tier and quality
START: Final = "start"  # its actor runs in this daemon
STEPS: Final = (ADD, REQUEST_CODE, VERIFY, REGISTER, SUBSCRIBE, PROFILE, CHECK, START)


class StepError(msgspec.Struct, kw_only=True, frozen=True):
    """Why a step failed: Meta's error as it came, or what was missing."""

    step: str
    message: str
    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str = ""
    at: float = 0.0


class OnboardRecord(msgspec.Struct, kw_only=True, frozen=True):
    number: str
    account: str
    waba_id: str
    verified_name: str = ""
    phone_number_id: str | None = None
    done: dict[str, float] = {}  # step -> wall time it completed
    notes: dict[str, str] = {}  # step -> what it found (e.g. "already verified at Meta")
    error: StepError | None = None
    created_at: float = 0.0

    def is_done(self, step: str) -> bool:
        return step in self.done

    @property
    def state(self) -> str:
        """The first step not done (``active`` once every required one is)."""
        for step in STEPS:
            if step != PROFILE and step not in self.done:
                return f"failed at {step}" if self.error is not None and self.error.step == step else step
        return "active"


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(OnboardRecord)


def key(number: str) -> bytes:
    return number_key(number, ONBOARD_KEY)


def load(store: Store, number: str) -> OnboardRecord | None:
    raw = store.get(b"numbers", key(number))
    return None if raw is None else _decoder.decode(raw)


def every(store: Store) -> Iterator[OnboardRecord]:
    """Every onboarding record of ``store``, by number."""
    suffix = SEP + ONBOARD_KEY
    for k, value in store.scan(b"numbers", b""):
        if k.endswith(suffix):
            yield _decoder.decode(value)


def put(record: OnboardRecord) -> Callable[[WriteTxn], None]:
    k, value = key(record.number), _encoder.encode(record)

    def write(txn: WriteTxn) -> None:
        txn.put(b"numbers", k, value)

    return write


def delete(number: str) -> Callable[[WriteTxn], None]:
    k = key(number)

    def write(txn: WriteTxn) -> None:
        txn.delete(b"numbers", k)

    return write


__all__ = ["STEPS", "OnboardRecord", "StepError", "delete", "every", "load", "put"]
