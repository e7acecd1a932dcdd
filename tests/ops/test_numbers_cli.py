"""``wadispatch numbers ...`` and ``wadispatch doctor`` against a real daemon and the simulator's Graph:
the README's walk, as an operator types it; a failing step printed with Meta's error; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.helpers.cli import cli
from tests.helpers.daemon import ADMIN_TOKEN, running_daemon
from tests.helpers.onboarding import ONBOARDED, PIN, WABA, code_of, onboarding_config


async def test_the_readme_walk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    with trio.fail_after(60):
        async with running_daemon(onboarding_config(tmp_path / "data")) as (daemon, _):
            url = ["--url", daemon.url]
            code, out, _ = await cli(
                capsys, "numbers", "add", ONBOARDED, "--waba", WABA, "--verified-name", "Lucky", *url
            )
            assert code == 0, out
            assert "add" in out and "request_code" in out and "code sent by SMS" in out
            assert f"next: wadispatch numbers verify {ONBOARDED} CODE" in out
            pnid = json.loads((await cli(capsys, "numbers", "list", "--json", *url))[1])["numbers"][0][
                "phone_number_id"
            ]
            wrong = f"{(int(code_of(daemon, pnid)) + 1) % 1_000_000:06d}"
            code, out, _ = await cli(capsys, "numbers", "verify", ONBOARDED, wrong, *url)
            assert code == 1
            assert "FAILED" in out and "step 'verify' failed" in out and "136025" in out
            code, out, _ = await cli(capsys, "numbers", "verify", ONBOARDED, code_of(daemon, pnid), *url)
            assert code == 0 and "code verified" in out
            code, out, _ = await cli(
                capsys, "numbers", "register", ONBOARDED, "--pin-file", str(pin_file), *url
            )
            assert code == 0, out
            for step in ("register", "subscribe", "check", "start"):
                assert step in out
            assert f"{ONBOARDED}: active" in out and "its actor started" in out
            code, out, _ = await cli(capsys, "numbers", "list", *url)
            assert code == 0 and ONBOARDED in out and "active" in out
            code, out, _ = await cli(
                capsys,
                "numbers",
                "profile",
                ONBOARDED,
                "--about",
                "Shrubs",
                "--website",
                "https://s.example",
                *url,
            )
            assert code == 0 and "Shrubs" in out and "https://s.example" in out
            code, out, _ = await cli(capsys, "doctor", ONBOARDED, *url)
            assert code == 0 and "token" in out and "SYSTEM_USER" in out and "warn" in out
            code, out, _ = await cli(capsys, "doctor", "--json", *url)
            assert code == 0 and json.loads(out)["ok"] is True
            code, out, _ = await cli(capsys, "numbers", "remove", ONBOARDED, *url)
            assert code == 0 and "removed" in out and "its actor stopped" in out
            assert daemon.supervisor.actor(ONBOARDED) is None


async def test_bad_usage_and_missing_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.delenv("WADISPATCH_PIN", raising=False)
    with trio.fail_after(60):
        async with running_daemon(onboarding_config(tmp_path / "data")) as (daemon, _):
            url = ["--url", daemon.url]
            code, _, err = await cli(capsys, "numbers", "verify", "not-a-number", "123456", *url)
            assert code == 2 and "not a phone number" in err
            code, _, err = await cli(capsys, "numbers", "add", ONBOARDED, *url)
            assert code == 2 and "--waba" in err and "--cert-file" in err
            await cli(capsys, "numbers", "add", ONBOARDED, "--waba", WABA, "--verified-name", "L", *url)
            code, _, err = await cli(capsys, "numbers", "register", ONBOARDED, *url)
            assert code == 1 and "two-step verification PIN is 6 digits" in err
            code, _, err = await cli(capsys, "numbers", "verify", "+15550009876", "123456", *url)
            assert code == 1 and "not being onboarded" in err
            code, _, err = await cli(capsys, "numbers", "add", ONBOARDED, "--waba", "42", *url)
            assert code == 1 and "no WABA 42" in err
