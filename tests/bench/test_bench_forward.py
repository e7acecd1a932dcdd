"""Smoke run of bench.forward with tiny counts: the three paths answer (straight to B, through A over
HTTP, through A over B's lane), every create sent to A went on to B."""

from __future__ import annotations

import subprocess
import sys

from tests.bench.test_bench import ROOT, run_bench


def test_forward_smoke() -> None:
    result = run_bench(
        "bench.forward", "--messages", "6", "--sequential", "4", "--concurrency", "2", "--rounds", "1"
    )
    # The warm-up (each way through A) and one round's creates through A, over HTTP and over the lane.
    assert result["forwarded"] == 2 * (6 + 4) + 2 * (6 + 4)
    for mode in ("direct", "http", "lane"):
        assert result[f"{mode}_creates_per_s"] > 0 and result[f"{mode}_p50_ms"] > 0
    for mode in ("http", "lane"):
        assert {f"{mode}_hop_p50_ms", f"{mode}_hop_cpu_ms_per_create"} <= set(result)


def test_forward_refuses_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.forward", "--rounds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "--rounds must be at least 1" in proc.stderr
