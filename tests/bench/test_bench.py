"""Smoke runs of every bench with tiny counts: each runs end to end and its JSON line adds up.

These are correctness checks of the benches (they start, measure, stop what they
started, and report consistent figures), never timing assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str, timeout: float = 90.0) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last)
    return result


def test_floor_smoke() -> None:
    result = run_bench("bench.floor", "--duration", "0.05", "--connections", "2")
    assert set(result["server_per_cpu_s"]) == {"quart", "asgi", "h11"}
    assert all(v > 0 for v in result["server_per_s"].values())
    assert result["client_per_cpu_s"]["h11_loop_1"] > 0
    assert set(result["h11pool_over_h11_loop"]) == {"1", "10", "50", "100"}
    assert set(result["lmdb_records_per_s"]) == {"1", "100", "1000"}
    assert all(v > 0 for v in result["codec"].values())


def test_actors_smoke() -> None:
    result = run_bench("bench.actors", "--numbers", "20", "--pending", "700", "--recovery-numbers", "3")
    assert result["numbers"] == 20
    assert result["pending"] == 700
    assert result["recovery_s"] > 0
    assert result["rss_after_mb"] >= result["rss_before_mb"] > 0
    assert result["tasks_when_idle"] < 20  # idle actors keep no task of their own


def test_sendloop_smoke() -> None:
    result = run_bench("bench.sendloop", "--messages", "300", "--recipients", "7", "--json")
    assert (result["messages"], result["recipients"], result["sends"]) == (300, 7, 300)
    assert result["sent_per_s"] > 0 and result["cpu_us_per_msg"] > 0 and result["commits"] >= 1
    assert result["writes_per_msg"] == 1.0  # under retry: the outcome, nothing more


def test_sendloop_at_most_once_marks_each_send() -> None:
    result = run_bench(
        "bench.sendloop", "--messages", "300", "--recipients", "7", "--on-ambiguous", "fail", "--json"
    )
    assert (result["on_ambiguous"], result["sends"], result["writes_per_msg"]) == ("fail", 300, 2.0)


@pytest.mark.parametrize("bad", [["--messages", "0"], ["--recipients", "-1"]])
def test_sendloop_rejects_bad_counts(bad: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sendloop", *bad], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "must be >= 1" in proc.stderr


@pytest.mark.parametrize("bad", [["--numbers", "0"], ["--pending", "-1"]])
def test_actors_rejects_bad_counts(bad: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.actors", *bad], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "must be >= 1" in proc.stderr


def test_e2e_smoke() -> None:
    result = run_bench("bench.e2e", "--numbers", "2", "--messages", "40", "--concurrency", "4", "--json")
    assert result["lost"] == 0
    assert result["errors"] == 0
    assert result["delivered_per_s"] > 0
    assert result["accept_p99_ms"] >= result["accept_p50_ms"] > 0


def test_e2e_paced_counts_the_wait_for_a_free_worker() -> None:
    """Open loop with one worker and a rate it cannot keep: every request after the first
    was due while the previous one was in flight, and that wait is in its latency."""
    result = run_bench(
        "bench.e2e",
        *("--numbers", "1", "--messages", "40", "--concurrency", "1"),
        *("--intake-only", "--accept-rate", "1000000", "--json"),
    )
    assert result["errors"] == 0
    assert result["stalled_starts"] == 39
    assert result["accept_p99_ms"] > result["accept_p50_ms"] > 0


def test_rate_smoke() -> None:
    result = run_bench("bench.rate", "--rate", "50", "--burst", "10", "--duration", "1.5", "--json")
    figures = result["numbers"]["+15550000000"]
    assert figures["saturated"]
    assert figures["rejected_429"] == 0
    assert figures["sent"] > 10
    assert 0 < figures["achieved_over_configured"] < 2
    assert figures["max_burst"] > 0


def test_rate_analysis_of_an_exact_series() -> None:
    from bench.rate import analyse

    # A full bucket of 5, then exactly 10/s, sampled every 0.1 s.
    series = [(0.1 * i, 5 + i) for i in range(1, 31)]
    figures = analyse(series, rate=10.0, burst=5)
    assert figures["achieved_over_configured"] == 1.0
    assert figures["max_burst"] == 5.0
    assert figures["sent"] == 35


def test_peer_smoke_against_a_cloud_shaped_server() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--serve", "h11"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        result = run_bench(
            "bench.peer", "--endpoint", f"http://127.0.0.1:{port}", "--messages", "30", "--sweep", "1,4"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result["errors"] == 0
    assert [level["sent"] for level in result["levels"]] == [30, 30]
    assert result["sent_per_s"] == max(level["sent_per_s"] for level in result["levels"])
    assert result["best_inflight"] in (1, 4)


@pytest.mark.parametrize(
    "bad", [["--endpoint", "ftp://x"], ["--endpoint", "http://127.0.0.1:9", "--sweep", "0"]]
)
def test_peer_rejects_bad_arguments(bad: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.peer", *bad], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2


def test_webhooks_smoke() -> None:
    result = run_bench(
        "bench.webhooks", "--numbers", "2", "--messages", "60", "--status-batch", "25", "--json"
    )
    assert result["statuses"] == 180
    assert result["errors"] == 0
    assert result["not_read_in_sample"] == 0
    assert result["sample"] == 50
    assert result["statuses_per_s"] > 0


def test_console_smoke() -> None:
    result = run_bench(
        "bench.console", "--numbers", "12", "--active", "3", "--seconds", "2", "--renders", "2"
    )
    assert (result["numbers"], result["active"]) == (12, 3)
    assert result["tick_ms"]["median"] > 0
    assert set(result["renders_ms"]) == {
        "fleet", "fleet_sorted_by_429s", "fleet_json", "number", "number_json", "callbacks"
    }  # fmt: skip
    assert all(r["median"] > 0 for r in result["renders_ms"].values())


def test_lists_smoke() -> None:
    result = run_bench(
        "bench.lists", "--messages", "120", "--numbers", "3", "--pages", "5", "--walks", "1", timeout=150.0
    )
    assert result["listed"] == 120  # every message, in three pages of 50
    assert result["local_page_ms"]["p50"] > 0
    if "gathered_page_ms" in result:  # etcd installed: three daemons on roots of their own
        assert result["gathered_listed"] == 120
        assert result["gathered_page_ms"]["max"] >= result["gathered_page_ms"]["p50"] > 0
