"""Which bucket a front-door request is about, read from its path (and, for a create, its sender).

A sid names its bucket; a webhook names its number in its path (On-Prem, and Cloud's
per-number URLs: the payload's phone_number_id is that number's and need not be read;
Cloud's app-level ``/webhooks/cloud`` names several numbers in one delivery: any daemon
takes it and hands each bucket's part to its owner, ``cloud_app``); a create's bucket is
its sender's (``From``, or the number a Messaging Service picks, deterministically:
``CreateRules.sender_of``).
A console page about one number (its page, its live JSON, its actions) is about
that number's bucket: the owner runs its actor (a console session is valid on
every daemon sharing the admin token). So is an admin call about one number
(``/admin/v1/numbers/{n}...``: its onboarding steps, outbox, pause, resume, drain, token
refresh; and the onboarding's add, whose number is in its JSON body): its record lives in
the number's bucket, and the owner runs its actor. Everything else
(lists, the rest of admin, metrics, the rest of the console, health) is served by
any daemon. Pure: no I/O, tested alone.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from dispatcher.core.buckets import Buckets
from dispatcher.core.directory import Directory
from dispatcher.core.twilio import API_VERSION
from dispatcher.frontdoor.admin import normalize_number

_CREATE: Final = re.compile(rf"^/{re.escape(API_VERSION)}/Accounts/([^/]+)/Messages\.json$")
_MESSAGE: Final = re.compile(
    rf"^/{re.escape(API_VERSION)}/Accounts/[^/]+/Messages/([A-Z]{{2}}[0-9a-f]{{32}})(?:\.json|/.*)$"
)
_ONPREM_WEBHOOK: Final = re.compile(r"^/webhooks/onprem/([0-9]{1,20})/[^/]+$")
_CLOUD_WEBHOOK: Final = re.compile(r"^/webhooks/cloud/([0-9]{1,30})$")
_CONSOLE_NUMBER: Final = re.compile(r"^/console/(?:api/)?numbers/([^/]+)(?:/[a-z-]+)?$")
_ADMIN_NUMBER: Final = re.compile(
    r"^/admin/v1/numbers/([^/]+)(?:/(?:verify|register|profile|outbox|pause|resume|drain|token/refresh))?$"
)
BATCH_PATH: Final = "/v1/messages:batch"
ADMIN_NUMBERS_PATH: Final = "/admin/v1/numbers"


@attrs.frozen
class Create:
    """A Twilio create for ``account``: its bucket is its sender's, known once the body is read."""

    account: str


@attrs.frozen
class Batch:
    """A batch: its items are split by their senders' buckets."""


@attrs.frozen
class AdminNumber:
    """An onboarding's add (``POST /admin/v1/numbers``): its bucket is its body's ``number``'s."""


@attrs.frozen
class InBucket:
    """A request about bucket ``bucket`` (a sid's message, a number's webhook)."""

    bucket: int


Route = Create | Batch | AdminNumber | InBucket | None  # None: any daemon serves it


def route(method: str, path: str, buckets: Buckets, directory: Directory) -> Route:
    """The request's route; None for what this daemon serves whoever owns what."""
    if method == "POST":
        if path == BATCH_PATH:
            return Batch()
        if (match := _CREATE.match(path)) is not None:
            return Create(match.group(1))
        if path == ADMIN_NUMBERS_PATH:
            return AdminNumber()
    if (match := _MESSAGE.match(path)) is not None:
        index = buckets.index_of_sid(match.group(1))
        return None if index is None else InBucket(index)
    if (match := _CONSOLE_NUMBER.match(path) or _ADMIN_NUMBER.match(path)) is not None:
        return InBucket(buckets.index(normalize_number(match.group(1))))
    if method != "POST":
        return None  # a webhook's GET is the Cloud handshake: any daemon answers it
    if (match := _ONPREM_WEBHOOK.match(path)) is not None:
        return InBucket(buckets.index("+" + match.group(1)))
    if (match := _CLOUD_WEBHOOK.match(path)) is not None:
        info = directory.cloud_number(match.group(1))
        return None if info is None else InBucket(buckets.index(info.number))
    return None
