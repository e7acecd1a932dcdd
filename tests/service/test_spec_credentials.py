"""A spec channel's login token (LINE's stateless token): taken at start, renewed before it lapses,
and again at once when a send is refused; under MockClock against the simulator, in process."""

from __future__ import annotations

import trio
import trio.testing

from actors.credentials.token import TokenManager
from dispatcher.core.channelspec.load import load_registry
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store
from dispatcher.service.numbers import spec_parts
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.spec_api import TOKEN_TTL, SpecNumber
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.configs import load, spec_table

LINE = "+15550003333"
SETTINGS = {"channel_id": "1656789012", "channel_secret": "line-channel-secret-0123456789"}


async def test_a_login_token_is_renewed_before_the_channel_lets_it_lapse(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = Simulator(wall_clock=wall, status_delays=None)
    sim.add_spec_number(SpecNumber(number=LINE, kind="line", settings=SETTINGS))
    num = load(spec_table(LINE, channel="line", settings=SETTINGS, simulated=True), simulator={}).numbers[0]
    loaded = load_registry().get("line")
    assert loaded is not None
    transport = InProcessTransport(sim, LINE)
    parts = spec_parts(num, loaded, transport, store=writer, wall=wall, status_url=None)
    tokens = parts.tokens
    assert isinstance(tokens, TokenManager)
    nursery.start_soon(tokens.run)
    await tokens.wait_ready()
    first = tokens.token
    assert sim.specs.counters(LINE).logins == 1
    await trio.sleep(TOKEN_TTL - 1)  # the simulator's token would lapse in a second
    assert sim.specs.counters(LINE).logins == 2 and tokens.token != first
    # The renewed token is one the channel takes; the lapsed one it refuses.
    ok = await transport.request(
        b"POST", b"/v2/bot/message/push", [(b"authorization", tokens.auth_header())], b""
    )
    assert ok.status == 400  # authenticated, then refused for its empty body
    await trio.sleep(1)
    stale = await transport.request(
        b"POST", b"/v2/bot/message/push", [(b"authorization", f"Bearer {first}".encode())], b""
    )
    assert stale.status == 401


async def test_a_refused_send_logs_in_again_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    sim = Simulator(wall_clock=wall, status_delays=None)
    sim.add_spec_number(SpecNumber(number=LINE, kind="line", settings=SETTINGS))
    num = load(spec_table(LINE, channel="line", settings=SETTINGS, simulated=True), simulator={}).numbers[0]
    loaded = load_registry().get("line")
    assert loaded is not None
    parts = spec_parts(num, loaded, InProcessTransport(sim, LINE), store=writer, wall=wall, status_url=None)
    tokens = parts.tokens
    nursery.start_soon(tokens.run)
    await tokens.wait_ready()
    stale = tokens.token
    sim.specs.revoke_tokens(LINE)
    async with trio.open_nursery() as both:  # two sends refused at once share one login
        both.start_soon(tokens.refresh, stale)
        both.start_soon(tokens.refresh, stale)
    assert sim.specs.counters(LINE).logins == 2 and tokens.token != stale
