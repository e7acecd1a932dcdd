"""Smoke run of bench.forward with tiny counts: both paths answer, every create went through A to B."""

from __future__ import annotations

import subprocess
import sys

from tests.bench.test_bench import ROOT, run_bench


def test_forward_smoke() -> None:
    result = run_bench(
        "bench.forward", "--messages", "6", "--sequential", "4", "--concurrency", "2", "--rounds", "1"
    )
    assert result["forwarded"] == 6 + 4 + 0  # one round's creates through A (the warm-up goes to B)
    for mode in ("direct", "forwarded"):
        assert result[f"{mode}_creates_per_s"] > 0 and result[f"{mode}_p50_ms"] > 0


def test_forward_refuses_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.forward", "--rounds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "--rounds must be at least 1" in proc.stderr
