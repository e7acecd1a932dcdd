"""The Messages resource assembled: its parts built in the order they need each other.

One function for the daemon and the tests, so both wire the create rules, the
scheduler, intake and edits alike. What a live reload swaps is owned by one
part each: numbers by the ``directory``, credentials by ``auth``, services and
the body limit by ``rules``, the templates file by ``templates``. ``fallbacks`` is the
task that sends fallback messages through ``gateway`` (the daemon runs it beside the scheduler).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from actors.supervisor import Supervisor
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.fallbacks import Alarm
from dispatcher.messages.auth import ApiKey, Authenticator
from dispatcher.messages.edits import Edits
from dispatcher.messages.fallback import Fallbacks
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.handoff import Handoff
from dispatcher.messages.media_guard import MediaGuard
from dispatcher.messages.rules import MAX_BODY_CHARS, CreateRules
from dispatcher.messages.scheduler import Scheduler
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry


@attrs.frozen
class Messaging:
    buckets: Buckets
    directory: Directory
    auth: Authenticator
    draining: set[str]  # numbers an operator drains (ops): the rules refuse new messages for them
    handoff: Handoff
    templates: TemplateRegistry
    rules: CreateRules
    scheduler: Scheduler
    gateway: Gateway
    edits: Edits
    fallbacks: Fallbacks


def build_messaging(
    *,
    buckets: Buckets,
    wall: WallClock,
    supervisor: Supervisor,
    numbers: Iterable[NumberInfo],
    accounts: Mapping[str, str],
    api_keys: Mapping[str, ApiKey] | None = None,
    templates: TemplateRegistry | None = None,
    services: Services | None = None,
    max_body_chars: int = MAX_BODY_CHARS,
    media_guard: MediaGuard | None = None,
) -> Messaging:
    """``templates``: without a configured file, only those added through the admin API;
    ``services``: none by default; ``media_guard``: the SSRF check of MediaUrl (the daemon's)."""
    directory = Directory(numbers)
    draining: set[str] = set()
    handoff = Handoff(supervisor)
    templates = templates if templates is not None else TemplateRegistry(buckets.home)
    rules = CreateRules(
        buckets=buckets,
        wall=wall,
        directory=directory,
        templates=templates,
        services=services if services is not None else Services((), buckets),
        draining=draining,
        max_body_chars=max_body_chars,
    )
    scheduler = Scheduler(buckets=buckets, wall=wall, notify=handoff.notify_part, blocked=rules.window_blocks)
    alarm = Alarm()
    gateway = Gateway(
        buckets=buckets,
        rules=rules,
        handoff=handoff,
        scheduler=scheduler,
        alarm=alarm,
        media_guard=media_guard,
    )
    return Messaging(
        buckets=buckets,
        directory=directory,
        auth=Authenticator(accounts, api_keys),
        draining=draining,
        handoff=handoff,
        templates=templates,
        rules=rules,
        scheduler=scheduler,
        gateway=gateway,
        edits=Edits(buckets=buckets, wall=wall, gateway=gateway, handoff=handoff),
        fallbacks=Fallbacks(buckets=buckets, wall=wall, gateway=gateway, handoff=handoff, alarm=alarm),
    )
