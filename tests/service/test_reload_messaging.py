"""Live reload applies [[services]], [messaging] max_body and templates_file; bad values keep the old."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.helpers.daemon import ACCOUNT, messages_path, running_daemon
from tests.service.test_reload import N1, N2, ConfigFile, reload

SERVICE = "MG" + "d" * 32
SHIPPED = "HX" + "1" * 32
TO = "whatsapp:+15551234567"


def templates_file(path: Path, account: str) -> Path:
    path.write_text(
        f"""
[[templates]]
sid = "{SHIPPED}"
account = "{account}"
namespace = "cdb2df51_9816_c754_c5a4_64cdabdcad3e"
name = "order_shipped"
language = "en_US"
body = "Hi {{{{1}}}}, your order {{{{2}}}} has shipped."
"""
    )
    return path


def messaging(account: str, templates: Path, *, max_body: int = 3000) -> str:
    return f"""
[messaging]
max_body = {max_body}
templates_file = "{templates}"
[[services]]
sid = "{SERVICE}"
account = "{account}"
numbers = ["{N1}", "{N2}"]
"""


async def create(client: httpx.AsyncClient, **data: str) -> httpx.Response:
    return await client.post(messages_path(), data={"To": TO, **data})


async def test_reload_applies_services_templates_and_max_body(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    templates = templates_file(tmp_path / "templates.toml", ACCOUNT)
    long_body = "x" * 2000
    with trio.fail_after(30):
        async with running_daemon(cfg.write({N1: "", N2: ""}), reload_config=cfg.load) as (_, client):
            assert (await create(client, From=f"whatsapp:{N1}", Body=long_body)).json()["code"] == 21617
            assert (await create(client, MessagingServiceSid=SERVICE, Body="b")).json()["code"] == 21705
            assert (await create(client, From=f"whatsapp:{N1}", ContentSid=SHIPPED)).json()["code"] == 21655

            cfg.path.write_text(cfg.path.read_text() + messaging(ACCOUNT, templates))
            assert (await reload(client)).json()["ok"] is True
            assert (await create(client, From=f"whatsapp:{N1}", Body=long_body)).status_code == 201
            by_service = await create(client, MessagingServiceSid=SERVICE, Body="b")
            assert by_service.status_code == 201 and by_service.json()["from"] in (
                f"whatsapp:{N1}",
                f"whatsapp:{N2}",
            )
            shipped = await create(
                client, From=f"whatsapp:{N1}", ContentSid=SHIPPED, ContentVariables='{"1":"Ada","2":"#42"}'
            )
            assert (
                shipped.status_code == 201 and shipped.json()["body"] == "Hi Ada, your order #42 has shipped."
            )

            # Removing them again is applied too.
            cfg.write({N1: "", N2: ""})
            assert (await reload(client)).json()["ok"] is True
            assert (await create(client, From=f"whatsapp:{N1}", Body=long_body)).json()["code"] == 21617
            assert (await create(client, MessagingServiceSid=SERVICE, Body="b")).json()["code"] == 21705
            assert (await create(client, From=f"whatsapp:{N1}", ContentSid=SHIPPED)).json()["code"] == 21655


async def test_invalid_messaging_values_are_rejected_and_the_old_ones_kept(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    templates = templates_file(tmp_path / "templates.toml", ACCOUNT)
    cfg.write({N1: "", N2: ""})
    good = cfg.path.read_text() + messaging(ACCOUNT, templates)
    cfg.path.write_text(good)
    long_body = "x" * 2000
    with trio.fail_after(30):
        async with running_daemon(cfg.load(), reload_config=cfg.load) as (_, client):
            broken_templates = tmp_path / "broken.toml"
            broken_templates.write_text("[[templates]]\nsid = 'HX1'\n")
            for text, error in [
                (good.replace("max_body = 3000", "max_body = 0"), "max_body"),
                (good.replace(str(templates), str(broken_templates)), "templates_file"),
                (good.replace(str(templates), str(tmp_path / "missing.toml")), "templates_file"),
                (good.replace(f'numbers = ["{N1}", "{N2}"]', 'numbers = ["+15559999999"]'), "services"),
            ]:
                cfg.path.write_text(text)
                answer = await reload(client)
                assert answer.status_code == 422 and error in answer.json()["error"], answer.text
            # Everything from the good config still holds.
            assert (await create(client, From=f"whatsapp:{N1}", Body=long_body)).status_code == 201
            assert (await create(client, MessagingServiceSid=SERVICE, Body="b")).status_code == 201
            shipped = await create(
                client, From=f"whatsapp:{N1}", ContentSid=SHIPPED, ContentVariables='{"1":"Ada","2":"#42"}'
            )
            assert shipped.status_code == 201


async def test_reload_applies_the_ssrf_allow_list_and_reports_other_callback_settings(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    local_media = {"From": f"whatsapp:{N1}", "MediaUrl": "http://127.0.0.1:9/cat.jpg"}
    with trio.fail_after(30):
        async with running_daemon(cfg.write({N1: ""}), reload_config=cfg.load) as (_, client):
            assert (await create(client, **local_media)).json()["code"] == 21620

            base = cfg.path.read_text()
            cfg.path.write_text(base + '[callbacks]\nallow_private = ["127.0.0.1/32"]\n')
            result = (await reload(client)).json()
            assert result["ok"] is True and result["restart_needed"] == []
            assert (await create(client, **local_media)).status_code == 201

            # The sender's other settings need a restart: reported, and the allow-list still applies.
            cfg.path.write_text(base + '[callbacks]\nallow_private = ["127.0.0.1/32"]\nconcurrency = 8\n')
            assert (await reload(client)).json()["restart_needed"] == ["callbacks"]
            assert (await create(client, **local_media)).status_code == 201

            cfg.path.write_text(base)
            assert (await reload(client)).json()["ok"] is True
            assert (await create(client, **local_media)).json()["code"] == 21620
