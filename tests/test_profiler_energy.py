"""profilers.energy: counters to cumulative joules, power, interpolation."""

from __future__ import annotations

import pytest

from profilers.energy import (
    EnergyAccountant,
    Row,
    counter_delta_ticks,
    interpolate_energy_j,
    interval_energy_j,
    trapezoid_energy_j,
)
from profilers.sensors.base import Counter, CounterSum, Gauge, Power

WRAP = 2**32


def _values(rows: list[Row], device: str, metric: str) -> list[float]:
    return [r.value for r in rows if r.device == device and r.metric == metric]


def test_counter_delta_wraps_modulo_2_32():
    assert counter_delta_ticks(WRAP - 10, 5, WRAP) == 15
    assert counter_delta_ticks(100, 250, WRAP) == 150
    assert counter_delta_ticks(7, 7, WRAP) == 0


def test_trapezoid_of_a_ramp_is_exact():
    # 100 W rising to 200 W over 2 s is 300 J.
    assert trapezoid_energy_j(10.0, 100.0, 12.0, 200.0) == pytest.approx(300.0)


def test_interpolation_between_cumulative_rows():
    points = [(0.0, 0.0), (1.0, 100.0), (2.0, 300.0)]
    assert interpolate_energy_j(points, 1.5) == pytest.approx(200.0)
    assert interval_energy_j(points, 0.5, 1.5) == pytest.approx(150.0)
    # Outside the sampled span nothing is invented.
    assert interpolate_energy_j(points, -5.0) == 0.0
    assert interpolate_energy_j(points, 9.0) == 300.0


def test_core_counter_wrap_is_accumulated():
    acc = EnergyAccountant("msr")
    unit = 2.0**-16
    rows = acc.rows(0.0, [Counter("core0", WRAP - 65536, unit, WRAP)])  # 1 J before the wrap
    rows += acc.rows(1.0, [Counter("core0", 3 * 65536, unit, WRAP)])  # 3 J after it
    assert _values(rows, "core0", "energy") == [0.0, pytest.approx(4.0)]
    assert _values(rows, "core0", "power") == [pytest.approx(4.0)]
    assert all(r.unit == "J" for r in rows if r.metric == "energy")


def test_energy_is_cumulative_from_the_first_reading_not_the_counter_origin():
    acc = EnergyAccountant("msr")
    unit = 2.0**-16
    acc.rows(0.0, [Counter("package0", 123_456_789, unit, WRAP)])
    rows = acc.rows(2.0, [Counter("package0", 123_456_789 + 655360, unit, WRAP)])
    assert _values(rows, "package0", "energy") == [pytest.approx(10.0)]
    assert _values(rows, "package0", "power") == [pytest.approx(5.0)]


def test_power_is_not_derived_from_a_too_short_interval():
    acc = EnergyAccountant("msr", min_power_interval_s=0.2)
    acc.rows(0.0, [Counter("package0", 0, 1.0, WRAP)])
    rows = acc.rows(0.05, [Counter("package0", 10, 1.0, WRAP)])
    assert _values(rows, "package0", "energy") == [10.0]
    assert _values(rows, "package0", "power") == []


def test_power_only_domain_is_integrated_and_labelled():
    acc = EnergyAccountant("nvml")
    rows = acc.rows(0.0, [Power("gpu0", 100.0, integrate=True)])
    rows += acc.rows(1.0, [Power("gpu0", 200.0, integrate=True)])
    rows += acc.rows(3.0, [Power("gpu0", 200.0, integrate=True)])
    assert _values(rows, "gpu0", "energy") == [0.0, pytest.approx(150.0), pytest.approx(550.0)]
    assert _values(rows, "gpu0", "power") == [100.0, 200.0, 200.0]
    assert acc.sources() == {"gpu0": "integrated_power"}


def test_counter_domain_keeps_the_sensors_own_power_reading():
    acc = EnergyAccountant("nvml")
    acc.rows(
        0.0,
        [
            Power("gpu0", 80.0, integrate=False),
            Counter("gpu0", 1000, 1e-3, 2**64, emit_power=False),
        ],
    )
    rows = acc.rows(
        1.0,
        [
            Power("gpu0", 90.0, integrate=False),
            Counter("gpu0", 86_000, 1e-3, 2**64, emit_power=False),
        ],
    )
    assert _values(rows, "gpu0", "power") == [90.0]
    assert _values(rows, "gpu0", "energy") == [pytest.approx(85.0)]
    assert acc.sources() == {"gpu0": "counter"}


def test_cores_sum_adds_wrap_corrected_cores():
    acc = EnergyAccountant("msr")
    members = ("core0", "core1")
    acc.rows(
        0.0,
        [
            Counter("core0", WRAP - 1, 1.0, WRAP),
            Counter("core1", 5, 1.0, WRAP),
            CounterSum("cores", members),
        ],
    )
    rows = acc.rows(
        2.0,
        [
            Counter("core0", 9, 1.0, WRAP),
            Counter("core1", 25, 1.0, WRAP),
            CounterSum("cores", members),
        ],
    )
    assert _values(rows, "cores", "energy") == [30.0]  # 10 J (across the wrap) + 20 J
    assert _values(rows, "cores", "power") == [15.0]


def test_gauge_rows_keep_metric_and_unit():
    rows = EnergyAccountant("nvml").rows(5.0, [Gauge("gpu0", "memory_used", 512.0, "MiB")])
    assert rows == [Row(5.0, "nvml", "gpu0", "memory_used", 512.0, "MiB")]
