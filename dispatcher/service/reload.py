"""Live reload: re-read the config and apply it to the running daemon.

A new config is first loaded and validated in full; an invalid one is rejected
with one clear log line and the running config stays in force. A valid one is
applied number by number:

- new numbers get an actor (which recovers any outbox they had before);
- removed numbers stop taking messages at once, get ``drain_timeout`` to send
  what is in their outbox, then their actor stops (what is left stays in LMDB
  for when the number comes back); their WhatsApp status webhooks still apply;
- a changed rate or burst is applied to the running token bucket;
- changed endpoints or credentials replace the actor: the old one finishes its
  sends in flight and stops before the new one recovers the outbox, so nothing
  is sent twice by two actors;
- accounts and API keys are swapped in the authenticator; webhook secrets and
  status-callback URLs in the number directory;
- ``[[services]]`` and ``[messaging] max_body`` replace the create rules', the
  ``templates_file`` (re-read; admin-added templates stay) the registry's;
- ``[callbacks] allow_private`` replaces the SSRF allow-list of callbacks and
  MediaUrl checks.

Sections that only take effect on a restart (server, store, simulator, log,
admin, and the callback sender's other settings) are reported, not applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, final

import msgspec
import structlog
import trio

from actors.supervisor import Supervisor
from dispatcher.channels.spec_webhook import SpecWebhooks
from dispatcher.config import CallbacksConfig, Config, ConfigError, NumberConfig, Secret, channel_registry
from dispatcher.core.buckets import Buckets
from dispatcher.core.directory import Directory
from dispatcher.core.ssrf import UrlGuard
from dispatcher.core.template_file import Template, TemplateError, load_file
from dispatcher.messages.auth import Authenticator, api_keys
from dispatcher.messages.rules import CreateRules
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.ops.operations import ReloadResult
from dispatcher.service.fleet import Fleet, gateway_accounts, number_info
from dispatcher.service.roster import Roster

if TYPE_CHECKING:
    from dispatcher.service.sandbox import Sandbox

log = structlog.get_logger()

RESTART_SECTIONS: Final = ("server", "store", "simulator", "log", "admin", "watch", "wabas")
# Fields the running actor can take on the fly (the rest need a new actor).
_TUNABLE: Final = frozenset({"rate", "burst"})
# Fields only the number directory uses (no new actor needed).
_DIRECTORY_ONLY: Final = frozenset(
    {"account", "webhook_secret", "status_callback", "inbound_url", "webhook_auth", "webhook_header", "waba"}
)


def _resolved(num: NumberConfig) -> dict[str, object]:
    """The number's settings with secrets resolved, so a rotated credential file counts as a change."""
    fields = msgspec.structs.asdict(num)
    for name in ("password", "webhook_secret"):
        secret = getattr(num, name)
        fields[name] = None if secret is None else secret.resolve(name)
    fields["settings"] = {
        key: value.resolve(key) if isinstance(value, Secret) else value for key, value in num.settings.items()
    }
    return fields


def _sender_settings(config: Config) -> CallbacksConfig:
    """The [callbacks] settings the running sender keeps until a restart (all but the allow-list)."""
    return msgspec.structs.replace(config.callbacks, allow_private=[])


def changed_fields(old: NumberConfig, new: NumberConfig) -> set[str]:
    before, after = _resolved(old), _resolved(new)
    return {name for name in before if before[name] != after[name]}


@final
class Reloader:
    def __init__(
        self,
        *,
        load: Callable[[], Config],
        config: Config,
        buckets: Buckets,
        supervisor: Supervisor,
        fleet: Fleet,
        directory: Directory,
        auth: Authenticator,
        rules: CreateRules,
        templates: TemplateRegistry,
        sandbox: Sandbox | None = None,
        url_guard: UrlGuard | None = None,
        roster: Roster | None = None,
        spec_webhooks: SpecWebhooks | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        """``load`` re-reads the config; the rest is what a reload changes. ``sandbox``: the embedded
        simulator, if this process runs one (simulated numbers can be added only then); ``roster``: the
        numbers running, the config's and the onboarded ones (a reload replaces the config's)."""
        self._load = load
        self._spec_webhooks = spec_webhooks
        self.config = config
        self._buckets = buckets
        self._supervisor = supervisor
        self._fleet = fleet
        self._directory = directory
        self._auth = auth
        self._rules = rules
        self._registry = templates
        self._sandbox = sandbox
        self._url_guard = url_guard
        self._roster = roster or Roster(config)
        self._poll = poll_interval

    async def __call__(self) -> ReloadResult:
        try:
            new = self._load()
            self._check(new)
            templates = self._templates(new)
        except ConfigError as exc:
            log.error("config.reload_rejected", error=str(exc), kept="running config")
            return ReloadResult(ok=False, error=str(exc))
        try:
            return await self._apply(new, templates)
        except Exception as exc:
            # A bug or an environment failure half way: say so loudly; the parts applied stay.
            log.error("config.reload_failed", exc_info=exc)
            return ReloadResult(ok=False, error=f"reload failed while applying: {exc!r}")

    def _check(self, new: Config) -> None:
        """What validate() cannot know: what this running process can take without a restart."""
        for i, num in enumerate(new.numbers):
            if num.simulated and self._sandbox is None:
                raise ConfigError(
                    f"numbers[{i}].simulated: the embedded simulator is not running; restart to add it"
                )

    @staticmethod
    def _templates(new: Config) -> list[Template]:
        """The new templates file, read now: validate() read it too, but it may have changed since."""
        path = new.messaging.templates_file
        if not path:
            return []
        try:
            return load_file(path)
        except TemplateError as exc:
            raise ConfigError(f"messaging.templates_file: {exc}") from exc

    async def _apply(self, new: Config, templates: list[Template]) -> ReloadResult:
        old = self.config
        old_numbers = {n.number: n for n in self._roster.numbers()}
        self._roster.set_config(new)  # the onboarded numbers stay; the config's are the new file's
        new_numbers = {n.number: n for n in self._roster.numbers()}
        added = [n for n in new_numbers if n not in old_numbers]
        removed = [n for n in old_numbers if n not in new_numbers]
        replaced: list[str] = []
        retuned: list[str] = []
        for number in new_numbers.keys() & old_numbers.keys():
            changes = changed_fields(old_numbers[number], new_numbers[number])
            if changes - _TUNABLE - _DIRECTORY_ONLY:
                replaced.append(number)
            elif changes & _TUNABLE:
                retuned.append(number)
        restart = [s for s in RESTART_SECTIONS if getattr(old, s) != getattr(new, s)]
        if _sender_settings(old) != _sender_settings(new):
            restart.append("callbacks")

        # Intake first: removed numbers refuse new messages from here on (their webhooks still apply).
        channels = channel_registry(new)  # checked by config.validate already
        self._directory.reload(number_info(num, channels) for num in new_numbers.values())
        self._auth.reload(gateway_accounts(new), api_keys(new))
        self._rules.reload(Services(new.services, self._buckets), new.messaging.max_body)
        self._registry.reload(templates)
        self._fleet.reload_channels(channels)
        if self._spec_webhooks is not None:
            self._spec_webhooks.reload(channels)
        if self._url_guard is not None and old.callbacks.allow_private != new.callbacks.allow_private:
            self._url_guard.set_allow(new.callbacks.allow_private)
        self.config = new
        drain = new.server.drain_timeout
        # Only the numbers of the buckets this process owns run here (all of them, without ownership).
        here = self._fleet.runs_here
        for number in sorted(retuned):
            num = new_numbers[number]
            actor = self._supervisor.actor(number)
            if actor is not None:
                actor.retune(num.rate, num.burst)
        for number in sorted(n for n in added if here(n)):
            num = new_numbers[number]
            self._register_simulated(num)
            await self._supervisor.add(self._fleet.build(num))
        # Each waits up to drain_timeout for sends in flight: all numbers at once, not one after another.
        async with trio.open_nursery() as nursery:
            for number in sorted(n for n in replaced if here(n)):
                nursery.start_soon(self._replace, new_numbers[number], drain)
            for number in sorted(n for n in removed if here(n)):
                nursery.start_soon(self._retire, number, drain)
        result = ReloadResult(
            ok=True,
            added=sorted(added),
            removed=sorted(removed),
            replaced=sorted(replaced),
            retuned=sorted(retuned),
            restart_needed=restart,
        )
        log.info(
            "config.reloaded",
            added=result.added,
            removed=result.removed,
            replaced=result.replaced,
            retuned=result.retuned,
            restart_needed=restart,
        )
        return result

    async def _replace(self, num: NumberConfig, timeout: float) -> None:
        previous = self._supervisor.actor(num.number)
        self._register_simulated(num)
        successor = self._fleet.build(num)
        if previous is not None and previous.paused:
            successor.pause()  # an operator's pause outlives the swap
        await self._supervisor.replace(successor, timeout=timeout)
        if previous is not None:
            await self._fleet.release(previous)

    def _register_simulated(self, num: NumberConfig) -> None:
        if self._sandbox is not None:
            self._sandbox.register(num, self._fleet.spec_of(num))

    async def _retire(self, number: str, timeout: float) -> None:
        await retire(self._supervisor, self._fleet, number, timeout=timeout, poll=self._poll)


async def retire(
    supervisor: Supervisor, fleet: Fleet, number: str, *, timeout: float, poll: float = 0.05
) -> int:
    """Give a number leaving the daemon ``timeout`` seconds to empty its outbox, then stop its
    actor; returns how many messages it left in its outbox (kept in LMDB)."""
    actor = supervisor.actor(number)
    if actor is None:
        return 0
    with trio.move_on_after(timeout):
        while True:
            if actor.statistics().pending == 0:
                break
            await trio.sleep(poll)
    left = actor.statistics().pending
    if left:
        log.warning("number.removed_with_outbox", number=number, outbox=left)
    await supervisor.retire(number, timeout=timeout)
    await fleet.release(actor)
    return left
