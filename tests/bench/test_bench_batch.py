"""Smoke run of bench.batch_intake with tiny counts: it runs end to end and its figures add up."""

from __future__ import annotations

import subprocess
import sys

from tests.bench.test_bench import ROOT, run_bench


def test_batch_intake_smoke() -> None:
    result = run_bench(
        "bench.batch_intake", "--batches", "2", "--size", "5", "--singles", "4", "--concurrency", "2"
    )
    assert result["batch_messages"] == 10 and result["stored"] == 14
    assert result["batch_msgs_per_s"] > 0 and result["single_msgs_per_s"] > 0
    assert result["batch_commits"] >= 2


def test_batch_intake_refuses_bad_arguments() -> None:
    for bad in (["--size", "1001"], ["--batches", "0"]):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.batch_intake", *bad],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2 and "must be" in proc.stderr
