"""Smoke runs of the Cloud API channel in the benches, with tiny counts: bench.e2e --channel cloud
(with the pywa peer in the same run) and bench.rate --channel cloud. Correctness, never timing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_bench import ROOT, run_bench


def test_e2e_cloud_with_the_peer_in_the_same_run() -> None:
    result = run_bench(
        "bench.e2e",
        "--channel",
        "cloud",
        "--peer",
        "--numbers",
        "2",
        "--messages",
        "40",
        "--concurrency",
        "4",
        "--status-batch",
        "10",
        "--peer-messages",
        "10",
        "--peer-sweep",
        "1,4",
        "--json",
    )
    assert result["channel"] == "cloud"
    assert result["lost"] == 0 and result["errors"] == 0
    assert result["sim_429"] == 0
    assert result["peer_errors"] == 0
    assert set(result["peer_levels"]) == {"1", "4"}
    assert result["peer_sent_per_s"] == max(result["peer_levels"].values())
    assert result["ratio_vs_peer"] == round(result["delivered_per_s"] / result["peer_sent_per_s"], 2)


def test_rate_cloud_smoke() -> None:
    result = run_bench(
        "bench.rate", "--channel", "cloud", "--rate", "50", "--burst", "10", "--duration", "1.5"
    )
    figures = result["numbers"]["+15550000000"]
    assert result["channel"] == "cloud"
    assert figures["saturated"]
    assert figures["rejected_429"] == 0
    assert figures["sent"] > 10
    assert 0 < figures["achieved_over_configured"] < 2


@pytest.mark.parametrize(
    "bad",
    [
        ["--peer"],  # the peer speaks the Cloud API only
        ["--channel", "cloud", "--rate", "1001"],  # above Meta's highest throughput
        ["--channel", "cloud", "--peer", "--intake-only"],
    ],
)
def test_e2e_refuses_bad_cloud_arguments(bad: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.e2e", *bad], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, proc.stderr
