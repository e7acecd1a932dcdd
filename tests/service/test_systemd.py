"""The systemd unit: systemd-analyze verify passes, it is hardened, and its credentials match the config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher import config as configuration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "wadispatch.service"
EXAMPLE = ROOT / "conf" / "example-production.toml"
CREDENTIALS = "/run/credentials/wadispatch.service/"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def installed_copy(tmp_path: Path, text: str) -> Path:
    """The unit as installed here: ExecStart points at this venv's wadispatch (verify checks it exists)."""
    wadispatch = Path(sys.executable).parent / "wadispatch"
    path = tmp_path / "wadispatch.service"
    path.write_text(text.replace("/opt/wadispatch/.venv/bin/wadispatch", str(wadispatch)))
    return path


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    result = verify(installed_copy(tmp_path, UNIT.read_text()))
    # verify reports many problems only as messages with exit status 0: any output is a failure.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a typo in the unit is reported."""
    broken = UNIT.read_text().replace("Type=notify", "Type=notfy").replace("ProtectHome=", "ProtectHom=")
    result = verify(installed_copy(tmp_path, broken))
    assert "notfy" in result.stderr and "ProtectHom" in result.stderr


@needs_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(installed_copy(tmp_path, UNIT.read_text()))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    match = re.search(r"Overall exposure level for wadispatch\.service: ([0-9.]+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match[1]) <= 2.0  # systemd calls < 2.0 "OK"; a default unit scores 9.6 "UNSAFE"


def test_unit_is_a_hardened_notify_service() -> None:
    settings = directives(UNIT.read_text())
    given = dict(settings)
    assert given["Type"] == "notify" and given["NotifyAccess"] == "main"
    assert int(given["WatchdogSec"]) > 0 and "kill -HUP $MAINPID" in given["ExecReload"]
    assert given["DynamicUser"] == "yes" and given["StateDirectory"] == "wadispatch"
    assert "--data-dir ${STATE_DIRECTORY}" in given["ExecStart"]
    # --workers: the parent passes SIGTERM on to each worker, so systemd signals the parent alone.
    assert "--workers ${WORKERS}" in given["ExecStart"] and given["Environment"] == "WORKERS=1"
    assert given["KillMode"] == "mixed"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert given[key] == value, key
    assert ("SystemCallFilter", "@system-service") in settings


def test_credentials_of_the_unit_are_the_ones_the_example_config_reads(tmp_path: Path) -> None:
    names = {v.split(":", 1)[0] for k, v in directives(UNIT.read_text()) if k == "LoadCredential"}
    text = EXAMPLE.read_text()
    assert set(re.findall(re.escape(CREDENTIALS) + r"([A-Za-z0-9_.-]+)", text)) == names
    # With the credentials in place, the example config loads.
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in names:
        (creds / name).write_text(f"{name}-value-0123456789\n")
    cfg = configuration.loads(text.replace(CREDENTIALS, f"{creds}/"))
    assert cfg.admin.token is not None
    assert cfg.admin.token.resolve("admin.token") == "admin-token-value-0123456789"
