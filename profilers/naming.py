"""How devices are ordered wherever they are listed: the summary, the analysis and the report."""

from __future__ import annotations


def device_sort_key(device: str) -> tuple[str, int]:
    """Natural order of device names: `cpu2` before `cpu10`, a bare `cpu` before both."""
    head = device.rstrip("0123456789")
    tail = device[len(head) :]
    return (head, int(tail) if tail else -1)
