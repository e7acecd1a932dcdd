"""Smoke run of bench.cloud_app with tiny counts: its three ways end to end, every message stored once
(the bench checks it and fails otherwise), and its JSON line adds up. Never a timing assertion."""

from __future__ import annotations

from tests.bench.test_bench import run_bench


def test_cloud_app_smoke() -> None:
    result = run_bench("bench.cloud_app", "--deliveries", "4", "--messages", "2", "--json", timeout=120.0)
    ways = {r["way"]: r for r in result["results"]}
    assert set(ways) == {"per_number", "app", "app_two_daemons"}
    assert ways["per_number"]["posts"] == 16 and ways["app"]["posts"] == 4
    assert all(r["messages_per_s"] > 0 and r["cpu_ms_per_1000"] >= 0 for r in ways.values())
