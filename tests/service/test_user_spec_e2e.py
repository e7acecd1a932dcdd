"""A new channel kind added with a spec file and no Python: the test writes the spec, names its
directory in the config, and the daemon sends, gets statuses and receives messages over it,
against the simulator serving the same file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher import config as configuration
from dispatcher.cli import main
from tests.helpers.callback_sink import FAST_CALLBACKS, open_sink
from tests.helpers.configs import ACCOUNT, keys
from tests.helpers.daemon import TOKEN, messages_path, running_daemon, sandbox_config
from tests.helpers.messages import wait_status

NUMBER = "+15550004444"
CUSTOMER = "+4915112345678"

# An imaginary chat API: JSON sends signed with HMAC-SHA256 over method, path, time and body;
# answers {"data": {"messageId"}} or {"errors": [{"code", "detail"}]}; status and message
# webhooks in one envelope of events, signed with a hex HMAC of the body.
SPEC = """
kind = "acme-chat"
prefix = "acme:"
base_url = "https://api.acme-chat.example"

[settings.key_id]
[settings.signing_key]
secret = true
[settings.webhook_key]
secret = true

[limits]
rate = 25.0
burst = 5

[auth]
type = "hmac"
header = "Acme-Signature"
encoding = "hex"
key = "{setting.signing_key}"
message = "{method}\\n{path}\\n{timestamp}\\n{body}"
timestamp_header = "Acme-Timestamp"

[send]
path = "/v2/accounts/{setting.key_id}/messages"
headers = { Idempotency-Key = "{sid}" }
[send.text]
[send.text.body]
recipient = { phone = "{to}" }
content = { kind = "text", text = "{body}" }
reference = "{sid}"
[send.media]
kinds = { image = "picture", document = "file" }
[send.media.body]
recipient = { phone = "{to}" }
content = { kind = "{media_kind}", url = "{media_url}", caption = "{caption?}" }

[answer]
id_path = "data.messageId"
error_code_path = "errors[0].code"
error_message_path = "errors[0].detail"

[[errors]]
code = ["NOT_REACHABLE"]
class = "permanent"
twilio_code = 30003

[webhook]
signature = { scheme = "hmac", header = "Acme-Webhook-Signature", key = "{setting.webhook_key}" }
[webhook.status]
items = "events"
when = { path = "type", equals = ["message.status"] }
id = "message.id"
status = "message.state"
recipient = "message.phone"
error_code = "message.reason"
map = { accepted = "", delivered = "delivered", seen = "read", bounced = "undelivered" }
error_codes = { NO_DEVICE = 30003 }
[webhook.inbound]
items = "events"
when = { path = "type", equals = ["message.received"] }
id = "message.id"
sender = "message.phone"
text = "message.text"
kind = "message.kind"
kinds = { text = "text", picture = "image" }
media_id = "message.mediaId"
media_type = "message.mediaType"
timestamp = "occurredAt"
timestamp_unit = "ms"

[simulator]
walk = ["accepted", "delivered", "seen"]
failed_status = "bounced"
failed_code = "NO_DEVICE"
envelope = { apiVersion = "2" }
[simulator.accepted]
status = 202
body = { data = { messageId = "{id}", status = "accepted" } }
[simulator.invalid_request]
status = 400
body = { errors = [{ code = "VALIDATION", detail = "content is invalid" }] }
[simulator.invalid_recipient]
status = 422
body = { errors = [{ code = "NOT_REACHABLE", detail = "{to} has no Acme account" }] }
[simulator.rate_limited]
status = 429
headers = { Retry-After = "1" }
body = { errors = [{ code = "RATE", detail = "slow down" }] }
[simulator.unauthorized]
status = 401
body = { errors = [{ code = "SIGNATURE", detail = "bad signature" }] }
"""


ACME_SETTINGS = {
    "key_id": "k-77",
    "signing_key": "sign-0123456789abcdef",
    "webhook_key": "hook-0123456789abcdef",
}


def config(
    data_dir: Path,
    spec_dir: Path,
    sink_url: str,
    channel: str = "acme-chat",
    settings: dict[str, str] = ACME_SETTINGS,
) -> configuration.Config:
    number = {
        "number": NUMBER,
        "account": ACCOUNT,
        "channel": channel,
        "simulated": True,
        "status_callback": f"{sink_url}/status",
        "inbound_url": f"{sink_url}/inbound",
    }
    table = "[[numbers]]\n" + keys(number) + "[numbers.settings]\n" + keys(settings)
    return sandbox_config(
        data_dir, numbers=(), extra=f'{FAST_CALLBACKS}[channels]\nspec_dir = "{spec_dir}"\n{table}'
    )


async def test_a_channel_kind_from_a_spec_file_alone(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "acme.toml").write_text(SPEC)
    async with (
        open_sink() as sink,
        running_daemon(config(tmp_path / "d", specs, sink.url)) as (daemon, client),
    ):
        resp = await client.post(
            messages_path(), data={"From": f"acme:{NUMBER}", "To": f"acme:{CUSTOMER}", "Body": "Grüße"}
        )
        assert resp.status_code == 201, resp.text
        sid = resp.json()["sid"]
        done = await wait_status(client, sid, "read")
        assert done["to"] == f"acme:{CUSTOMER}"
        assert daemon.simulator is not None
        [sent] = daemon.simulator.specs.received(NUMBER)
        assert sent.values["body"] == "Grüße" and sent.values["to"] == CUSTOMER
        await sink.wait_for(
            lambda s: any(h.form.get("MessageStatus") == "read" for h in s.delivered("/status"))
        )
        assert {h.form["ChannelPrefix"] for h in sink.delivered("/status")} == {"acme"}

        media = await client.post(
            messages_path(),
            data={
                "From": f"acme:{NUMBER}",
                "To": f"acme:{CUSTOMER}",
                "Body": "the receipt",
                "MediaUrl": "http://127.0.0.1:9/r.pdf",
            },
        )
        assert media.status_code == 201, media.text
        await wait_status(client, media.json()["sid"], "read")
        file = daemon.simulator.specs.received(NUMBER)[-1]
        assert (
            file.kind == "media"
            and file.values["media_kind"] == "file"
            and file.values["caption"] == "the receipt"
        )

        bounced = await client.post(
            messages_path(), data={"From": f"acme:{NUMBER}", "To": "acme:+15559990000", "Body": "hi"}
        )
        failed = await wait_status(client, bounced.json()["sid"], "undelivered")
        assert failed["error_code"] == 30003

        daemon.simulator.specs.inbound_text(NUMBER, CUSTOMER, "thanks!")
        await sink.wait_for(lambda s: bool(s.delivered("/inbound")))
        inbound = sink.delivered("/inbound")[0].form
        assert inbound["From"] == f"acme:{CUSTOMER}" and inbound["Body"] == "thanks!"

        # A WhatsApp address for this number is another channel's: refused, nothing stored.
        wrong = await client.post(
            messages_path(), data={"From": f"acme:{NUMBER}", "To": f"whatsapp:{CUSTOMER}", "Body": "hi"}
        )
        assert wrong.status_code == 400 and wrong.json()["code"] == 21910


def test_check_config_names_the_bad_key_of_a_user_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "acme.toml").write_text(
        SPEC.replace('timestamp_unit = "ms"', 'timestamp_unit = "ms"\ntimezone = "UTC"')
    )
    cfg = tmp_path / "wadispatch.toml"
    cfg.write_text(
        f'[channels]\nspec_dir = "{specs}"\n[[accounts]]\nsid = "{ACCOUNT}"\n'
        f'auth_token = {{ value = "{TOKEN}" }}\n'
    )
    assert main(["check-config", str(cfg)]) == 2
    assert f"{specs}/acme.toml: webhook.inbound.timezone: unknown key" in capsys.readouterr().err


async def test_the_example_spec_in_conf_runs_as_shipped(tmp_path: Path) -> None:
    """conf/channels/example-http-sms.toml, the README's complete example, against the simulator."""
    example = Path(__file__).parents[2] / "conf" / "channels" / "example-http-sms.toml"
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / example.name).write_text(example.read_text())
    settings = {"api_key": "key-0123456789", "signing_secret": "signing-0123456789"}
    async with (
        open_sink() as sink,
        running_daemon(config(tmp_path / "d", specs, sink.url, "example-http-sms", settings)) as (
            daemon,
            client,
        ),
    ):
        resp = await client.post(messages_path(), data={"From": NUMBER, "To": CUSTOMER, "Body": "hi"})
        assert resp.status_code == 201, resp.text
        done = await wait_status(client, resp.json()["sid"], "delivered")
        assert done["to"] == CUSTOMER and done["from"] == NUMBER
        assert daemon.simulator is not None
        daemon.simulator.specs.inbound_text(NUMBER, CUSTOMER, "reply")
        await sink.wait_for(lambda s: bool(s.delivered("/inbound")))
        assert sink.delivered("/inbound")[0].form["From"] == CUSTOMER
