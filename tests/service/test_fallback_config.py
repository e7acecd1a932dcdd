"""``[services.fallback]`` and a number's ``window_template``: what check-config accepts and refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher import config
from dispatcher.cli import main

ACCOUNT = "AC00000000000000000000000000000001"
OTHER = "AC00000000000000000000000000000002"
WINDOW = "HX" + "2" * 32


def text(fallback: str, *, number_extra: str = "") -> str:
    numbers = "".join(
        f"""
[[numbers]]
number = "{number}"
account = "{account}"
endpoints = ["https://wa.example.com:9090"]
password = {{ value = "pw" }}
webhook_secret = {{ value = "hook-secret-0123456789" }}
{number_extra if number == "+15550000001" else ""}
"""
        for number, account in (("+15550000001", ACCOUNT), ("+15550000002", ACCOUNT), ("+15550000003", OTHER))
    )
    return f"""
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "test-auth-token-0123456789" }}
[[accounts]]
sid = "{OTHER}"
auth_token = {{ value = "test-auth-token-9876543210" }}
{numbers}
[[services]]
sid = "MG{"a" * 32}"
account = "{ACCOUNT}"
numbers = ["+15550000001"]
[services.fallback]
{fallback}
"""


def test_a_service_fallback_and_a_number_window_template_load() -> None:
    cfg = config.loads(
        text(
            'from = "+15550000002"\nerror_codes = [63003, 63024]\nafter = 90\nawait = "sent"\n'
            f'window_template = "{WINDOW}"\nwindow_variable = "body"',
            number_extra=f'window_template = "{WINDOW}"',
        )
    )
    fallback = cfg.services[0].fallback
    assert fallback is not None
    assert (fallback.from_, fallback.error_codes, fallback.after, fallback.await_) == (
        "+15550000002",
        [63003, 63024],
        90.0,
        "sent",
    )
    assert (fallback.window_template, fallback.window_variable) == (WINDOW, "body")
    assert cfg.numbers[0].window_template == WINDOW and cfg.numbers[0].window_variable == "1"


@pytest.mark.parametrize(
    ("fallback", "says"),
    [
        ('from = "+15550000002"', "services[0].fallback: a fallback sender needs error_codes or after"),
        ("error_codes = [63003]", "services[0].fallback.from: error_codes and after need a fallback sender"),
        ("after = 60", "services[0].fallback.from: error_codes and after need a fallback sender"),
        ("", "services[0].fallback: give from (with error_codes or after) or window_template"),
        (
            'from = "+15550000003"\nafter = 60',
            f"services[0].fallback.from: +15550000003 is not a number of {ACCOUNT}",
        ),
        ('from = "+15550000009"\nafter = 60', "services[0].fallback.from: +15550000009 is not a number of"),
        ('from = "+15550000001"\nafter = 60', "is a sender of the service itself"),
        (
            'from = "+15550000002"\nerror_codes = [63003, 63003]',
            "services[0].fallback.error_codes: a code is listed twice",
        ),
        ('from = "+15550000002"\nafter = 0', "services[0].fallback.after: Expected `float` > 0.0"),
        ('from = "+15550000002"\nafter = 86401', "services[0].fallback.after: Expected `float` <= 86400.0"),
        (
            'from = "+15550000002"\nerror_codes = [0]',
            "services[0].fallback.error_codes[0]: Expected `int` >= 1",
        ),
        (
            'from = "+15550000002"\nafter = 60\nawait = "read"',
            "services[0].fallback.await: Invalid enum value 'read'",
        ),
        ('window_template = "HXnope"', "services[0].fallback.window_template: Expected `str` matching"),
        ('from = "whatsapp:+15550000002"\nafter = 60', "services[0].fallback.from: Expected `str` matching"),
        ('from = "+15550000002"\nafter = 60\nbogus = 1', "services[0].fallback.bogus: unknown key"),
    ],
)
def test_a_bad_fallback_is_refused_naming_the_key(fallback: str, says: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.loads(text(fallback))
    assert says in str(info.value), str(info.value)


def test_a_bad_window_template_of_a_number_is_refused_naming_the_key() -> None:
    with pytest.raises(config.ConfigError, match=r"^numbers\[0\]\.window_template: Expected `str` matching"):
        config.loads(text('window_template = "' + WINDOW + '"', number_extra='window_template = "order"'))


def test_check_config_names_the_bad_fallback_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dispatcher.toml"
    path.write_text(text('from = "+15550000002"\nerror_codes = [63003]'))
    assert main(["check-config", str(path)]) == 0
    path.write_text(text("error_codes = [63003]"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "services[0].fallback.from: error_codes and after need a fallback sender" in err
