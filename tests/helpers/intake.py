"""The Messages resource built for a test the way the daemon builds it (``service.messaging``).

Tests of the create rules, intake and edits take the parts they exercise from
``Intake``; ``reloader_for`` builds a live reload over the same parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from actors.supervisor import Supervisor
from dispatcher.config import Config
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import Store
from dispatcher.service.fleet import Fleet, gateway_accounts, number_info
from dispatcher.service.messaging import Messaging, build_messaging
from dispatcher.service.reload import Reloader
from tests.helpers.buckets import as_buckets

Intake = Messaging  # the name the tests of intake know it by


def build_intake(
    store: Store | Buckets,
    *,
    supervisor: Any = None,
    numbers: Mapping[str, NumberInfo],
    accounts: Mapping[str, str],
    wall: WallClock,
    **kwargs: Any,
) -> Intake:
    """``build_messaging`` as the daemon calls it; ``supervisor``: a Supervisor or a stand-in with its
    ``actor``/``states`` (default: one without actors); ``store``: one bucket's, or the buckets.
    ``kwargs``: templates, services, ..."""
    return build_messaging(
        buckets=as_buckets(store),
        wall=wall,
        supervisor=supervisor if supervisor is not None else Supervisor([]),
        numbers=numbers.values(),
        accounts=accounts,
        **kwargs,
    )


def intake_for_config(
    store: Store | Buckets, supervisor: Supervisor, config: Config, wall: WallClock
) -> Intake:
    """``build_intake`` for the numbers and accounts of ``config``."""
    return build_intake(
        store,
        supervisor=supervisor,
        numbers={n.number: number_info(n) for n in config.numbers},
        accounts=gateway_accounts(config),
        wall=wall,
    )


def reloader_for(
    intake: Intake,
    supervisor: Supervisor,
    fleet: Fleet,
    *,
    load: Callable[[], Config],
    config: Config,
    **kwargs: Any,
) -> Reloader:
    """A live reload of ``intake``'s parts and of ``fleet``'s actors under ``supervisor``, ``load``
    re-reading the config."""
    return Reloader(
        load=load,
        config=config,
        buckets=intake.buckets,
        supervisor=supervisor,
        fleet=fleet,
        directory=intake.directory,
        auth=intake.auth,
        rules=intake.rules,
        templates=intake.templates,
        **kwargs,
    )
