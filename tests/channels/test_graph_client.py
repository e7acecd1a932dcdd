"""The cold-path Graph client and the version verdict: Meta's error object read as it comes (and
what a proxy answers instead), no answer at all, the served version, Meta's schedule."""

from __future__ import annotations

import datetime
import re
import socket

import httpx
import msgspec
import pytest

from dispatcher.channels.graph import GraphClient, GraphError, GraphUnreachable, Success, graph_error
from dispatcher.channels.graph_templates import LIST_FIELDS, GraphTemplates
from dispatcher.channels.graph_versions import check

# Meta's example error body (reference whatsapp-and-twilio-api.md 2.4), with the user-facing texts.
META_ERROR = (
    b'{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,'
    b'"error_data":{"messaging_product":"whatsapp",'
    b'"details":"Cloud API message throughput has been reached."},'
    b'"error_subcode":2494055,"fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam","error_user_title":"Slow down",'
    b'"error_user_msg":"Too many messages"}}'
)


def test_metas_error_object_is_read_whole() -> None:
    error = graph_error(400, META_ERROR)
    assert (error.code, error.subcode, error.fbtrace_id, error.kind) == (
        130429,
        2494055,
        "Az8or2yhqkZfEZ-_4Qn_Bam",
        "OAuthException",
    )
    assert str(error) == (
        "HTTP 400 code 130429/2494055: (#130429) Rate limit hit (Slow down: Too many messages) "
        "[fbtrace_id Az8or2yhqkZfEZ-_4Qn_Bam]"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>502 Bad Gateway</html>", "HTTP 502: <html>502 Bad Gateway</html>"),
        (b"", "HTTP 502: HTTP 502 without a Graph error body"),
        (b'{"error": "nope"}', 'HTTP 502: {"error": "nope"}'),
    ],
)
def test_an_answer_that_is_not_metas_error_says_what_came(body: bytes, expected: str) -> None:
    error = graph_error(502, body)
    assert error.code is None and str(error) == expected


GRAPH = "https://graph.example"


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


async def test_a_call_sends_the_token_and_notes_the_serving_version() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True}, headers={"facebook-api-version": "v24.0"})

    async with _client(httpx.MockTransport(answer)) as http:
        graph = GraphClient(
            client=http, base_url="https://graph.example/", version="v23.0", token=lambda: "EAAx"
        )
        assert (await graph.post("123/register", Success, json={"pin": "123456"})).success
        assert (await graph.post("123/request_code", Success, data={"code_method": "SMS"})).success
    assert graph.served_version == "v24.0"
    assert str(seen[0].url) == "https://graph.example/v23.0/123/register"
    assert seen[0].headers["authorization"] == "Bearer EAAx"
    assert msgspec.json.decode(seen[0].content) == {"pin": "123456"}
    assert seen[1].content == b"code_method=SMS"


async def test_an_unexpected_success_body_is_an_error_not_a_crash() -> None:
    async with _client(httpx.MockTransport(lambda _: httpx.Response(200, content=b"[1, 2]"))) as http:
        graph = GraphClient(client=http, base_url="https://g.example", version="v23.0", token=lambda: "t")
        with pytest.raises(GraphError, match="unexpected answer"):
            await graph.get("123", Success)


async def test_no_answer_is_unreachable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient() as http:
        graph = GraphClient(
            client=http, base_url=f"http://127.0.0.1:{port}", version="v23.0", token=lambda: "t"
        )
        with pytest.raises(GraphUnreachable) as caught:
            await graph.get("123", Success)
    assert caught.value.status == 0 and str(caught.value).startswith("Graph API unreachable")


TODAY = datetime.date(2026, 12, 6)


@pytest.mark.parametrize(
    ("configured", "served", "upgraded", "near_end", "ok"),
    [
        ("v23.0", "v23.0", False, False, True),
        ("v23.0", "23.0", False, False, True),  # the header has no "v"
        ("v21.0", None, False, True, False),  # ends 2027-01-21: within 90 days
        ("v20.0", None, False, False, False),  # ended 2026-09-24
        ("v20.0", "v21.0", True, False, False),  # Meta serves it with the next one
        ("v26.0", "v26.0", False, False, True),  # end not announced
        ("v99.0", None, False, False, True),  # not in the schedule: unknown, not wrong
    ],
)
def test_the_version_verdict(
    configured: str, served: str | None, upgraded: bool, near_end: bool, ok: bool
) -> None:
    verdict = check(configured, served, TODAY, warn_days=90)
    assert (verdict.upgraded, verdict.near_end, verdict.ok) == (upgraded, near_end, ok)
    assert (verdict.problem() is None) == ok
    assert verdict.known == (configured != "v99.0")


def test_the_reason_an_operator_reads() -> None:
    """Meta's user-facing title and text when it gave them, else its message with the details."""
    assert graph_error(400, META_ERROR).reason == "Slow down: Too many messages"
    plain = graph_error(
        400,
        b'{"error":{"message":"Invalid parameter","code":100,'
        b'"error_data":{"details":"Template name already exists"}}}',
    )
    assert plain.details == "Template name already exists"
    assert plain.reason == "Invalid parameter: Template name already exists"
    assert graph_error(502, b"<html>502</html>").reason == "<html>502</html>"


async def test_a_raw_call_goes_to_this_graph_host_only() -> None:
    """A link Meta gave (``paging.next``) is followed with the token only on the same host."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=b'{"data": []}')

    async with _client(httpx.MockTransport(answer)) as http:
        graph = GraphClient(client=http, base_url="https://graph.example", version="v23.0", token=lambda: "t")
        assert await graph.call_raw("GET", "https://graph.example/v23.0/1/x?after=a") == b'{"data": []}'
        with pytest.raises(GraphError, match=re.escape("refused to call https://elsewhere.example/steal")):
            await graph.call_raw("GET", "https://elsewhere.example/steal?after=a")
        with pytest.raises(GraphError, match="refused"):
            await graph.call_raw("GET", "https://graph.example.evil/v23.0/1")
    assert seen == ["https://graph.example/v23.0/1/x?after=a"]


async def test_template_pages_follow_metas_link_on_its_host_and_the_cursor_elsewhere() -> None:
    """Three pages: the first links to our host (followed as given), the second to another host
    (not followed: its ``after`` cursor is asked of ours instead)."""
    template = {"id": "1", "name": "t{n}", "language": "en_US", "category": "UTILITY", "status": "APPROVED"}
    seen: list[httpx.URL] = []

    def page(n: int, next_url: str | None, after: str | None) -> bytes:
        body: dict[str, object] = {"data": [{**template, "id": str(n), "name": f"t{n}"}]}
        if next_url:
            body["paging"] = {"cursors": {"after": after}, "next": next_url}
        return msgspec.json.encode(body)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        after = request.url.params.get("after")
        if after is None:
            return httpx.Response(200, content=page(1, f"{GRAPH}/v23.0/W/message_templates?after=c1", "c1"))
        if after == "c1":
            return httpx.Response(200, content=page(2, "https://cdn.elsewhere.example/next?after=c2", "c2"))
        return httpx.Response(200, content=page(3, None, None))

    async with _client(httpx.MockTransport(answer)) as http:
        graph = GraphClient(client=http, base_url="https://graph.example", version="v23.0", token=lambda: "t")
        listed = await GraphTemplates(graph=graph, waba="W").list_all()
    assert [t.name for t in listed] == ["t1", "t2", "t3"]
    assert [url.host for url in seen] == ["graph.example"] * 3
    assert seen[2].params["after"] == "c2" and seen[2].params["fields"] == LIST_FIELDS
