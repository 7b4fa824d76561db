"""CPU topology from sysfs: which logical CPUs share a physical core and a package."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def sysfs_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The sysfs root: the argument, else `$GREENKD_SYSFS_ROOT`, else `/sys`."""
    return Path(root if root is not None else os.environ.get("GREENKD_SYSFS_ROOT", "/sys"))


def parse_cpu_list(text: str) -> list[int]:
    """Parse the kernel's cpulist format (`0-3,8,10-11`) into sorted CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            cpus.update(range(int(low), int(high) + 1))
        else:
            cpus.add(int(part))
    return sorted(cpus)


@dataclass(frozen=True)
class CpuPlace:
    """Where a logical CPU sits: its package and the logical CPUs of its physical core."""

    cpu: int
    package: int
    core_cpus: tuple[int, ...]


def cpu_place(cpu: int, root: Path) -> CpuPlace:
    """Read one CPU's place from `<root>/devices/system/cpu/cpuN/topology`; OSError if absent."""
    topo = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
    package = int((topo / "physical_package_id").read_text().strip())
    # core_cpus_list (Linux 5.x) and thread_siblings_list (older) name the SMT
    # siblings directly; core_id alone repeats across dies on some AMD parts.
    for name in ("core_cpus_list", "thread_siblings_list"):
        path = topo / name
        if path.exists():
            siblings = parse_cpu_list(path.read_text())
            return CpuPlace(cpu, package, tuple(siblings) if cpu in siblings else (cpu,))
    return CpuPlace(cpu, package, (cpu,))


def read_cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU model name from /proc/cpuinfo (`model name`), or None where it is absent."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return None
