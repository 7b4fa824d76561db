"""profilers.summary: idle and dynamic energy per domain, node totals, CO2e, jitter percentiles."""

from __future__ import annotations

import pytest

from profilers.energy import Row
from profilers.naming import device_sort_key
from profilers.summary import SummaryBuilder, carbon_estimate, percentile, totals


def test_summary_splits_idle_and_dynamic_energy():
    # Idle 2 s at 50 W (0 -> 100 J), then 4 s of work reaching 900 J.
    builder = SummaryBuilder()
    for ts, e in [(0.0, 0.0), (1.0, 50.0), (2.0, 100.0)]:
        builder.add(Row(ts, "msr", "package0", "energy", e, "J"))
    builder.work_start_ts = 2.0
    for ts, e, p in [(4.0, 500.0, 200.0), (6.0, 900.0, 250.0)]:
        builder.add(Row(ts, "msr", "package0", "energy", e, "J"))
        builder.add(Row(ts, "msr", "package0", "power", p, "W"))
    (domain,) = builder.domains({("msr", "package0"): "counter"}, {}, {("msr", "package0")}, set())
    assert domain["energy_j"] == 800.0
    assert domain["avg_power_w"] == 200.0
    assert domain["peak_power_w"] == 250.0
    assert domain["idle_power_w"] == 50.0
    assert domain["idle_energy_j"] == 200.0
    assert domain["dynamic_energy_j"] == 600.0
    assert domain["in_total"] and domain["complete"]


def test_summary_without_idle_baseline_has_no_split():
    builder = SummaryBuilder(work_start_ts=0.0)
    builder.add(Row(0.0, "msr", "package0", "energy", 0.0, "J"))
    builder.add(Row(3.0, "msr", "package0", "energy", 30.0, "J"))
    (domain,) = builder.domains({}, {}, set(), set())
    assert domain["energy_j"] == 30.0
    assert domain["idle_power_w"] is None and domain["dynamic_energy_j"] is None


def test_utilization_average_is_weighted_by_interval_length():
    builder = SummaryBuilder(work_start_ts=0.0)
    builder.add(
        Row(0.0, "procstat", "cpu", "utilization", 99.0, "%")
    )  # idle-phase row: not averaged
    builder.add(Row(1.0, "procstat", "cpu", "utilization", 100.0, "%"))  # covers 1 s
    builder.add(Row(4.0, "procstat", "cpu", "utilization", 20.0, "%"))  # covers 3 s
    (util,) = builder.utilizations()
    assert util["avg_pct"] == pytest.approx((100.0 * 1 + 20.0 * 3) / 4)


def test_totals_add_only_non_overlapping_domains():
    domains = [
        {
            "sensor": "msr",
            "device": "package0",
            "energy_j": 100.0,
            "idle_energy_j": 40.0,
            "in_total": True,
        },
        {
            "sensor": "msr",
            "device": "cores",
            "energy_j": 70.0,
            "idle_energy_j": 20.0,
            "in_total": False,
        },
        {
            "sensor": "nvml",
            "device": "gpu0",
            "energy_j": 300.0,
            "idle_energy_j": 100.0,
            "in_total": True,
        },
    ]
    total = totals(domains)
    assert total["energy_j"] == 400.0
    assert total["dynamic_energy_j"] == 260.0
    assert total["domains"] == ["msr:package0", "nvml:gpu0"]


def test_carbon_estimate_states_the_intensity_used():
    carbon = carbon_estimate(3.6e6, 400.0)  # 1 kWh
    assert carbon["g_co2e"] == pytest.approx(400.0)
    assert carbon["intensity_g_per_kwh"] == 400.0
    assert "estimate" in carbon["note"] and "400" in carbon["note"]
    assert carbon_estimate(1000.0, None) is None
    assert carbon_estimate(None, 300.0)["g_co2e"] is None


def test_percentile_interpolates_order_statistics():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert percentile([], 99) is None


def test_devices_are_listed_in_natural_order():
    assert sorted(["cpu10", "cpu2", "cpu", "gpu1"], key=device_sort_key) == [
        "cpu",
        "cpu2",
        "cpu10",
        "gpu1",
    ]
