"""The ``wadispatch`` admin commands against a real daemon: tables, --json, progress, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
import trio

from dispatcher import admincli
from dispatcher.ops.operations import Outbox, Status
from tests.helpers.cli import cli
from tests.helpers.daemon import ADMIN_SECTION, ADMIN_TOKEN, messages_path, running_daemon, sandbox_config

N2 = "+15550000002"


async def test_status_outbox_pause_drain_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", extra=ADMIN_SECTION)) as (daemon, client):
            url = ["--url", daemon.url]
            code, out, _ = await cli(capsys, "status", *url)
            assert code == 0
            for number in ("+15550000001", N2, "+15550000003"):
                assert number in out
            assert "running" in out and "20/s 60" in out and "6d 23h" in out
            code, out, _ = await cli(capsys, "status", "--json", *url)
            status = msgspec.json.decode(out, type=Status)
            assert [n.state for n in status.numbers] == ["running"] * 3

            code, out, _ = await cli(capsys, "pause", N2, *url)
            assert (code, out.strip()) == (0, f"{N2}: paused (0 in the outbox)")
            sids = []
            for i in range(4):
                resp = await client.post(
                    messages_path(),
                    data={"From": f"whatsapp:{N2}", "To": f"whatsapp:+1555123400{i}", "Body": f"m{i}"},
                )
                sids.append(resp.json()["sid"])
            code, out, _ = await cli(capsys, "outbox", "whatsapp:" + N2, "--limit", "3", *url)
            assert code == 0 and "first 3 of 4 pending" in out
            assert all(sid in out for sid in sids[:3]) and sids[3] not in out
            code, out, _ = await cli(capsys, "outbox", N2, "--json", *url)
            box = msgspec.json.decode(out, type=Outbox)
            assert box.depth == 4 and [e.sid for e in box.entries] == sids

            code, out, err = await cli(capsys, "drain", N2, "--poll", "0.05", *url)
            assert code == 0, err
            assert out.strip() == f"{N2}: drained (outbox empty; new messages refused)"
            assert f"draining {N2}" in err and "4/4" in err  # the progress bar, on stderr
            assert daemon.simulator is not None
            # Four recipients, sent concurrently: any order.
            assert sorted(r.content for r in daemon.simulator.received(N2)) == ["m0", "m1", "m2", "m3"]
            code, out, _ = await cli(capsys, "resume", N2, "--json", *url)
            assert json.loads(out) == {"number": N2, "state": "running", "outbox": 0}

            code, out, _ = await cli(capsys, "token", "refresh", N2, *url)
            assert code == 0 and out.startswith(f"{N2}: new token, expires in 6d 23h")
            code, out, _ = await cli(capsys, "token", "refresh", N2, "--json", *url)
            assert json.loads(out)["refreshes"] == 3

            # No reload source in this in-process daemon: refused, with the reason.
            code, out, _ = await cli(capsys, "reload", *url)
            assert code == 1 and "live reload is not available" in out


async def test_errors_have_clear_messages_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WADISPATCH_ADMIN_TOKEN", raising=False)
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", extra=ADMIN_SECTION)) as (daemon, _):
            url = ["--url", daemon.url]
            code, _, err = await cli(capsys, "status", *url)
            assert code == 2 and "no admin token" in err
            code, _, err = await cli(capsys, "status", "--admin-token", "wrong-token-wrong-token", *url)
            assert code == 1 and err.startswith("wadispatch: HTTP 401: Authenticate")
            token_file = tmp_path / "admin.token"
            token_file.write_text(ADMIN_TOKEN + "\n")
            auth = ["--admin-token-file", str(token_file), *url]
            code, _, err = await cli(capsys, "pause", "+15559999999", *auth)
            assert code == 1 and "HTTP 404: No number +15559999999 is configured" in err
            code, _, err = await cli(capsys, "pause", "not-a-number", *auth)
            assert code == 2 and "not a phone number" in err
            code, _, err = await cli(capsys, "status", "--admin-token-file", str(tmp_path / "missing"), *url)
            assert code == 2 and "cannot read" in err
            bad = tmp_path / "bad.json"
            bad.write_text("{nope")
            code, _, err = await cli(capsys, "templates", "add", str(bad), *auth)
            assert code == 2 and "not valid JSON" in err
            code, _, err = await cli(capsys, "outbox", "+15550000001", *auth, "--url", "http://127.0.0.1:9")
            assert code == 3 and "cannot reach the daemon" in err


async def test_drain_wait_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    cfg = sandbox_config(tmp_path / "data", extra=ADMIN_SECTION, rate=0.5, burst=1)
    with trio.fail_after(60):
        async with running_daemon(cfg) as (daemon, client):
            for i in range(5):
                await client.post(
                    messages_path(),
                    data={"From": f"whatsapp:{N2}", "To": "whatsapp:+15551234000", "Body": f"slow {i}"},
                )
            code, _, err = await cli(
                capsys, "drain", N2, "--json", "--poll", "0.05", "--wait-timeout", "0.3", "--url", daemon.url
            )
            assert code == 4 and "still" in err and "in the outbox after 0.3s" in err


def test_template_list_rendering() -> None:
    rendered = admincli._generic_table({"templates": [{"name": "otp", "language": "en"}, {"name": "x"}]})
    assert not isinstance(rendered, str)
    assert [c.header for c in rendered.columns] == ["name", "language"]
    assert admincli._generic_table([]) == "no templates"
    assert admincli._generic_table({"odd": 1}) == '{\n  "odd": 1\n}'


async def test_status_shows_why_a_number_is_degraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", extra=ADMIN_SECTION)) as (daemon, _):
            daemon.supervisor.mark_degraded(N2, "token revoked (190)")
            code, out, _ = await cli(capsys, "status", "--json", "--url", daemon.url)
            n2 = {n.number: n for n in msgspec.json.decode(out, type=Status).numbers}[N2]
            assert (n2.state, n2.degraded) == ("degraded", "token revoked (190)")
            code, out, _ = await cli(capsys, "status", "--url", daemon.url)
            assert code == 0 and "degraded (token revoked (190))" in out


async def test_templates_add_then_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    definition = tmp_path / "otp.json"
    definition.write_text(
        json.dumps(
            {
                "account": "AC00000000000000000000000000000001",
                "namespace": "acme",
                "name": "otp_code",
                "language": "en",
                "body": "Your code is {{1}}.",
            }
        )
    )
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", extra=ADMIN_SECTION)) as (daemon, _):
            url = ["--url", daemon.url]
            code, out, err = await cli(capsys, "templates", "add", str(definition), *url)
            assert code == 0, err
            assert out.startswith("template added:") and "otp_code" in out
            code, out, err = await cli(capsys, "templates", "list", *url)
            assert code == 0 and "otp_code" in out and "Your code is {{1}}." in out
            code, out, _ = await cli(capsys, "templates", "list", "--json", *url)
            assert [t["name"] for t in json.loads(out)["templates"]] == ["otp_code"]
            # A definition the daemon refuses: exit 1 with its reason.
            bad = tmp_path / "bad.json"
            bad.write_text(json.dumps({"name": "no_account"}))
            code, _, err = await cli(capsys, "templates", "add", str(bad), *url)
            assert code == 1 and err.startswith("wadispatch: HTTP 400: Invalid template")
