"""Smoke runs of the Cloud API channel in the benches, with tiny counts: bench.e2e --channel cloud
(with the pywa peer in the same run), bench.rate --channel cloud and its --chatty case. Correctness,
never timing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.test_bench import ROOT, run_bench


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


def test_rate_cloud_chatty_smoke() -> None:
    # Seed 1 over 6 s: one burst each (3, 2 and 4 messages), so no wait is due; plumbing only.
    result = run_bench("bench.rate", "--channel", "cloud", "--chatty", "--duration", "6", "--seed", "1")
    assert result["chatty"] and result["recipients"] == 3
    assert result["messages"] == 9 and result["failed"] == 0
    assert result["pair_limited_131056"] == 0 and result["rejected_429"] == 0
    assert set(result["latency_s"]) == {"p50", "p95", "max"} and result["meta_minimum_s"]["max"] == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        ["--chatty"],
        ["--channel", "cloud", "--chatty", "--numbers", "2"],
        ["--channel", "cloud", "--chatty", "--recipients", "0"],
    ],
)
def test_rate_refuses_bad_chatty_arguments(bad: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.rate", *bad], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, proc.stderr


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
