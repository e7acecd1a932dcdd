"""The embedded simulator (``[simulator]``): WhatsApp's APIs faked beside the daemon, for a sandbox.

The daemon imports this module only when the config asks for the simulator, so
a production daemon never loads the simulator's code. The sandbox serves each
simulated number in the simulator, its webhooks aimed at our front door; a live
reload registers the numbers it adds or replaces the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import msgspec
import structlog
import trio

from dispatcher.channels.spec_channel import webhook_path
from dispatcher.config import NumberConfig, SimulatorConfig, WabaConfig, parse_listen
from dispatcher.core.channelspec.load import LoadedSpec
from dispatcher.service.fleet import number_info
from dispatcher.service.numbers import spec_pace, spec_settings
from dispatcher.simulator.cloud import CloudNumber
from dispatcher.simulator.config import SimNumber
from dispatcher.simulator.core import STATUS_DELAYS, Simulator
from dispatcher.simulator.graph_numbers import SimWaba as NumbersWaba
from dispatcher.simulator.graph_templates import SimWaba
from dispatcher.simulator.server import serve as serve_simulator
from dispatcher.simulator.spec_api import SpecNumber

log = structlog.get_logger()


@final
class Sandbox:
    def __init__(
        self, simulator: Simulator, *, url: str, config: SimulatorConfig, front_url: Callable[[], str]
    ) -> None:
        """``url``: where the simulator listens; ``front_url``: where our front door does (read when
        a number is registered, once the front door listens)."""
        self.simulator = simulator
        self.url = url
        self._config = config
        self._front_url = front_url

    def register(self, num: NumberConfig, spec: LoadedSpec | None = None) -> None:
        """Serve a sandbox number in the embedded simulator, its webhooks aimed at our front door
        (``spec``: the channel spec of a number of a spec kind)."""
        if not num.simulated:
            return
        if num.channel == "cloud":
            self._register_cloud(num)
            return
        if spec is not None:
            self._register_spec(num, spec)
            return
        assert num.password is not None
        info = number_info(num)
        sim = SimNumber(
            number=num.number,
            password=num.password.resolve("password"),
            username=num.username,
            webhook_url=f"{self._front_url()}/webhooks/onprem/{num.number.lstrip('+')}/{info.webhook_secret}",
            rate=self._config.rate,
            burst=self._config.burst,
        )
        if num.number in self.simulator.numbers():
            self.simulator.remove_number(num.number)
        self.simulator.add_number(sim)

    def _register_spec(self, num: NumberConfig, spec: LoadedSpec) -> None:
        """A sandbox number of a spec kind: the number's pace as the channel's, webhooks signed per spec."""
        settings = spec_settings(num, spec)
        rate, burst = spec_pace(num, spec)  # the channel allows what the number is set to send
        sim = SpecNumber(
            number=num.number,
            kind=spec.kind,
            settings=settings,
            webhook_url=self._front_url() + webhook_path(spec, settings, num.number),
            rate=rate,
            burst=burst,
        )
        specs = self.simulator.specs
        if specs.serves(num.number.lstrip("+")):
            specs.remove_number(num.number)
        specs.add_number(sim, spec)

    def _register_cloud(self, num: NumberConfig) -> None:
        """A sandbox Cloud number: Meta's limits as configured, signed webhooks to /webhooks/cloud/."""
        assert num.cloud is not None
        cloud, where = num.cloud, f"{num.number}.cloud"
        sim = CloudNumber(
            number=num.number,
            phone_number_id=cloud.phone_number_id,
            access_token=cloud.access_token.resolve(f"{where}.access_token"),
            app_secret=cloud.app_secret.resolve(f"{where}.app_secret"),
            webhook_url=f"{self._front_url()}/webhooks/cloud/{num.number.lstrip('+')}",
            throughput=cloud.throughput,
            throughput_burst=cloud.throughput_burst,
            pair_interval=cloud.pair_interval or 6.0,
            pair_burst=cloud.pair_burst,
            messaging_limit=None if cloud.messaging_limit == "unlimited" else cloud.messaging_limit,
        )
        if num.waba is not None:
            sim = msgspec.structs.replace(sim, waba_id=num.waba)
        if cloud.phone_number_id in {n.phone_number_id for n in self.simulator.cloud.numbers()}:
            self.simulator.cloud.remove_number(cloud.phone_number_id)
        self.simulator.cloud.add_number(sim)

    def register_waba(self, waba: WabaConfig) -> None:
        """Serve a sandbox WABA: its templates at the simulator's Graph paths, reviewed on its control
        API; with an app secret, numbers can be onboarded into it (``wadispatch numbers``), its
        account webhooks signed with that secret."""
        if not waba.simulated:
            return
        token = waba.access_token.resolve(f"wabas.{waba.id}.access_token")
        if waba.id not in {w.id for w in self.simulator.templates.wabas()}:  # its templates stay on a reload
            self.simulator.templates.add_waba(SimWaba(id=waba.id, access_token=token))
        numbers = self.simulator.graph_numbers
        if waba.app_secret is not None and waba.id not in numbers.wabas:
            secret = waba.app_secret.resolve(f"wabas.{waba.id}.app_secret")
            numbers.add_waba(NumbersWaba(id=waba.id, token=token, app_secret=secret))


async def start_sandbox(
    config: SimulatorConfig, nursery: trio.Nursery, *, front_url: Callable[[], str]
) -> Sandbox:
    """Start the simulator in ``nursery`` (it runs until that nursery ends) and listen."""
    simulator = Simulator(
        webhook_batch=config.webhook_batch,
        status_delays=STATUS_DELAYS if config.status_webhooks else None,
    )
    host, port = parse_listen(config.listen, "simulator.listen")
    await nursery.start(simulator.run)
    url = await nursery.start(serve_simulator, simulator, host, port)
    log.info("simulator.listening", url=url)
    return Sandbox(simulator, url=url, config=config, front_url=front_url)
