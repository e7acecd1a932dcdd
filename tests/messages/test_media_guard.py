"""MediaUrl SSRF guard at create: refused hosts are Twilio's 21620 and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.supervisor import Supervisor
from dispatcher.core import ledger
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.ssrf import Resolver, UrlGuard
from dispatcher.core.store import Store
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.media_guard import MediaGuard
from dispatcher.messages.rules import SendRequest
from tests.helpers.daemon import messages_path, running_daemon, sandbox_config
from tests.helpers.intake import build_intake

ACCOUNT = "AC" + "0" * 32
FROM, TO = "+15550000001", "+15551234567"
PUBLIC = "93.184.216.34"

NAMES = {
    "cdn.example.com": [PUBLIC],
    "intranet.example": ["10.0.0.5"],
    "split.example": [PUBLIC, "169.254.169.254"],
    "v6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
    "v6-local.example": ["fe80::1%eth0"],
}


async def table_resolver(host: str, port: int) -> list[str]:
    """A DNS without the internet: the names above; any other name does not exist."""
    try:
        return NAMES[host]
    except KeyError:
        raise OSError(f"[Errno -2] Name or service not known: {host}") from None


def gateway(store: Store, *, allow: tuple[str, ...] = (), resolver: Resolver = table_resolver) -> Gateway:
    return build_intake(
        store,
        supervisor=Supervisor([]),
        accounts={ACCOUNT: "token"},
        numbers={FROM: NumberInfo(number=FROM, account_sid=ACCOUNT, webhook_secret="s")},
        wall=SystemWallClock(),
        media_guard=MediaGuard(UrlGuard(allow, resolver=resolver)),
    ).gateway


def send(*urls: str) -> SendRequest:
    return SendRequest(to=TO, from_=FROM, body="a file", media_urls=urls)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.jpg",
        "http://169.254.169.254/latest/meta-data/iam",
        "https://10.1.2.3/x.png",
        "https://192.168.0.9:8443/x.png",
        "http://[::1]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://[fd00:ec2::254]/latest",
        "https://100.64.0.1/a.jpg",
        "http://0.0.0.0/a.jpg",
        "https://intranet.example/a.jpg",
        "https://split.example/a.jpg",
        "https://v6-local.example/a.jpg",
    ],
)
async def test_a_refused_address_is_21620_and_nothing_is_stored(writer: Store, url: str) -> None:
    gw = gateway(writer)
    with pytest.raises(TwilioError) as caught:
        await gw.create(ACCOUNT, send("https://cdn.example.com/ok.jpg", url))
    assert (caught.value.status, caught.value.code) == (400, 21620)
    assert "not allowed" in caught.value.message and url in caught.value.message
    assert writer.entries(b"messages") == 0 and writer.entries(b"outbox") == 0


async def test_a_name_that_does_not_resolve_is_21620(writer: Store) -> None:
    with pytest.raises(TwilioError) as caught:
        await gateway(writer).create(ACCOUNT, send("https://nowhere.example/a.jpg"))
    assert caught.value.code == 21620 and "does not resolve" in caught.value.message
    assert writer.entries(b"messages") == 0


async def test_public_names_and_addresses_are_accepted(writer: Store) -> None:
    urls = ("https://cdn.example.com/a.jpg", "https://v6.example/b.pdf", f"http://{PUBLIC}/c.mp4")
    record = await gateway(writer).create(ACCOUNT, send(*urls))
    assert record.media_urls == list(urls)
    stored = writer.get(b"messages", ledger.sid_key(record.sid))
    assert stored is not None and ledger.load(stored).media_urls == list(urls)


async def test_allow_listed_private_addresses_are_accepted(writer: Store) -> None:
    gw = gateway(writer, allow=("127.0.0.1", "10.0.0.0/8"))
    record = await gw.create(ACCOUNT, send("http://127.0.0.1:8080/a.jpg", "https://intranet.example/b.png"))
    assert record.num_media == 2 and writer.entries(b"messages") == 1
    with pytest.raises(TwilioError) as caught:  # the allow list is exact: other ranges stay refused
        await gw.create(ACCOUNT, send("http://169.254.169.254/latest"))
    assert caught.value.code == 21620 and writer.entries(b"messages") == 1


async def test_each_host_is_resolved_once_per_request(writer: Store) -> None:
    asked: list[str] = []

    async def counting(host: str, port: int) -> list[str]:
        asked.append(host)
        return [PUBLIC]

    urls = [f"https://cdn.example.com/{i}.jpg" for i in range(5)] + ["https://other.example/x.jpg"]
    await gateway(writer, resolver=counting).create(ACCOUNT, send(*urls))
    assert asked == ["cdn.example.com", "other.example"]


async def test_a_text_message_is_not_resolved(writer: Store) -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("no media, no lookup")

    record = await gateway(writer, resolver=no_dns).create(ACCOUNT, SendRequest(to=TO, from_=FROM, body="hi"))
    assert record.num_media == 0


async def test_a_slow_resolver_is_cut_off_with_21620(autojump_clock: trio.testing.MockClock) -> None:
    async def hangs(host: str, port: int) -> list[str]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    guard = MediaGuard(UrlGuard(resolver=hangs), timeout=2.0)
    start = trio.current_time()
    with pytest.raises(TwilioError) as caught:
        await guard.check(["https://slow.example/a.jpg"])
    assert caught.value.code == 21620 and "within 2 seconds" in caught.value.message
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_the_daemon_refuses_a_metadata_media_url_over_http(tmp_path: Path) -> None:
    with trio.fail_after(30):
        cfg = sandbox_config(tmp_path / "d")
        async with running_daemon(cfg, resolver=table_resolver) as (daemon, client):
            for url in ("http://169.254.169.254/latest/meta-data", "https://intranet.example/a.jpg"):
                answer = await client.post(
                    messages_path(),
                    data={"From": f"whatsapp:{FROM}", "To": f"whatsapp:{TO}", "MediaUrl": url},
                )
                assert answer.status_code == 400 and answer.json()["code"] == 21620
            assert daemon.store.entries(b"messages") == 0
            ok = await client.post(
                messages_path(),
                data={
                    "From": f"whatsapp:{FROM}",
                    "To": f"whatsapp:{TO}",
                    "MediaUrl": "https://cdn.example.com/a.jpg",
                },
            )
            assert ok.status_code == 201 and ok.json()["num_media"] == "1"
