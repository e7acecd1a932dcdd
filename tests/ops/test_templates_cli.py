"""``wadispatch templates sync|list|show|submit|delete`` against a daemon whose WABA the simulator serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.helpers.cli import cli
from tests.helpers.daemon import ADMIN_TOKEN, running_daemon
from tests.helpers.templates import WABA, corpus, sid_of, until, waba_config


async def test_sync_list_show_submit_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("COLUMNS", "250")
    named = corpus("meta_docs_order_shipped_named")
    with trio.fail_after(90):
        async with running_daemon(waba_config(tmp_path / "data")) as (daemon, _client):
            sim = daemon.simulator
            assert sim is not None
            url = ["--url", daemon.url]
            sim.templates.seed(WABA, corpus("pywa_seasonal_promotion"))
            sim.templates.seed(WABA, named)
            code, out, err = await cli(capsys, "templates", "sync", *url)
            assert code == 0, err
            assert WABA in out and "2" in out
            code, out, _ = await cli(capsys, "templates", "sync", "--json", *url)
            [synced] = json.loads(out)["synced"]
            assert (synced["waba"], synced["fetched"], synced["error"]) == (WABA, 2, None)

            code, out, _ = await cli(capsys, "templates", "list", *url)
            assert code == 0 and "seasonal_promotion" in out and "order_shipped_named" in out
            assert "header, first_name, order_id, button.0, button.1" in out
            code, out, _ = await cli(capsys, "templates", "list", "--json", "--status", "APPROVED", *url)
            listed = json.loads(out)["synced"]
            assert {t["sid"] for t in listed} == {sid_of(named), sid_of(corpus("pywa_seasonal_promotion"))}

            code, out, _ = await cli(capsys, "templates", "show", "order_shipped_named", *url)
            assert code == 0 and sid_of(named) in out and "NAMED" in out and "{{first_name}}" in out
            code, out, _ = await cli(capsys, "templates", "show", sid_of(named), "--json", *url)
            assert (
                json.loads(out)["components"][1]["text"]
                == "Hi {{first_name}}, your order {{order_id}} has shipped."
            )

            definition = tmp_path / "reminder.json"
            definition.write_text(
                json.dumps(
                    {
                        "name": "appointment_reminder",
                        "language": "en_US",
                        "category": "UTILITY",
                        "components": [
                            {
                                "type": "BODY",
                                "text": "Your appointment is on {{1}} at {{2}}.",
                                "example": {"body_text": [["May 4", "10:00"]]},
                            }
                        ],
                    }
                )
            )
            code, out, err = await cli(capsys, "templates", "submit", str(definition), "--waba", WABA, *url)
            assert code == 0, err
            assert "appointment_reminder (en_US) submitted: PENDING" in out
            sim.templates.review(WABA, "appointment_reminder", "reject", reason="INCORRECT_CATEGORY")
            reminder = sid_of({"name": "appointment_reminder", "language": "en_US"})
            await until(lambda: daemon.catalog.get(reminder).status == "REJECTED")  # type: ignore[union-attr]
            code, out, _ = await cli(capsys, "templates", "show", reminder, *url)
            assert "REJECTED (INCORRECT_CATEGORY)" in out

            # Meta refuses a second one of the same name and language: exit 1 with Meta's reason.
            code, _, err = await cli(capsys, "templates", "submit", str(definition), "--waba", WABA, *url)
            assert code == 1 and "already exists" in err

            code, out, err = await cli(
                capsys, "templates", "delete", "appointment_reminder", "--waba", WABA, *url
            )
            assert code == 0 and reminder in out, err
            assert [t["name"] for t in sim.templates.templates(WABA)] == [
                "seasonal_promotion",
                "order_shipped_named",
            ]
            code, _, err = await cli(capsys, "templates", "delete", "x", "--waba", "not-a-waba", *url)
            assert code == 2 and "not a WABA id" in err
            code, _, err = await cli(capsys, "templates", "show", "nope", *url)
            assert code == 1 and "No template nope" in err
