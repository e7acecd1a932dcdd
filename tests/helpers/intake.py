"""The Messages resource built for a test, in the daemon's order: directory, rules, hand-off, gateway.

Tests of the create rules, intake and edits take the parts they exercise from
``Intake``; ``reloader`` builds a live reload over the same parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from actors.supervisor import Supervisor
from dispatcher.config import Config
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.store import Store
from dispatcher.messages.auth import ApiKey, Authenticator
from dispatcher.messages.edits import Edits
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.handoff import Handoff
from dispatcher.messages.media_guard import MediaGuard
from dispatcher.messages.rules import MAX_BODY_CHARS, CreateRules
from dispatcher.messages.scheduler import Scheduler
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.service.fleet import Fleet, gateway_accounts, number_info
from dispatcher.service.reload import Reloader


@attrs.frozen
class Intake:
    store: Store
    supervisor: Supervisor
    directory: Directory
    auth: Authenticator
    draining: set[str]
    handoff: Handoff
    templates: TemplateRegistry
    rules: CreateRules
    scheduler: Scheduler
    gateway: Gateway
    edits: Edits


def build_intake(
    store: Store,
    *,
    supervisor: Any = None,
    numbers: Mapping[str, NumberInfo],
    accounts: Mapping[str, str],
    wall: WallClock,
    api_keys: Mapping[str, ApiKey] | None = None,
    templates: TemplateRegistry | None = None,
    services: Services | None = None,
    max_body_chars: int = MAX_BODY_CHARS,
    media_guard: MediaGuard | None = None,
) -> Intake:
    """``supervisor``: a Supervisor or a stand-in with its ``actor``/``states`` (default: none running)."""
    supervisor = supervisor if supervisor is not None else Supervisor([])
    directory = Directory(numbers.values())
    draining: set[str] = set()
    handoff = Handoff(supervisor)
    templates = templates if templates is not None else TemplateRegistry(store)
    rules = CreateRules(
        store=store,
        wall=wall,
        directory=directory,
        templates=templates,
        services=services or Services((), store),
        draining=draining,
        running=handoff.running,
        max_body_chars=max_body_chars,
    )
    scheduler = Scheduler(store=store, wall=wall, notify=handoff.notify_part, blocked=rules.window_blocks)
    gateway = Gateway(store=store, rules=rules, handoff=handoff, scheduler=scheduler, media_guard=media_guard)
    return Intake(
        store=store,
        supervisor=supervisor,
        directory=directory,
        auth=Authenticator(accounts, api_keys),
        draining=draining,
        handoff=handoff,
        templates=templates,
        rules=rules,
        scheduler=scheduler,
        gateway=gateway,
        edits=Edits(store=store, wall=wall, gateway=gateway, handoff=handoff),
    )


def intake_for_config(store: Store, supervisor: Supervisor, config: Config, wall: WallClock) -> Intake:
    """``build_intake`` for the numbers and accounts of ``config``."""
    return build_intake(
        store,
        supervisor=supervisor,
        numbers={n.number: number_info(n) for n in config.numbers},
        accounts=gateway_accounts(config),
        wall=wall,
    )


def reloader_for(
    intake: Intake, fleet: Fleet, *, load: Callable[[], Config], config: Config, **kwargs: Any
) -> Reloader:
    """A live reload of ``intake``'s parts and ``fleet``'s actors, ``load`` re-reading the config."""
    return Reloader(
        load=load,
        config=config,
        store=intake.store,
        supervisor=intake.supervisor,
        fleet=fleet,
        directory=intake.directory,
        auth=intake.auth,
        rules=intake.rules,
        templates=intake.templates,
        **kwargs,
    )
