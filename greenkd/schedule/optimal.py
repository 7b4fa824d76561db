"""Exact makespan minimisation for `--sched opt` (issue 7): branch and bound under a time cap.

Each device's cost is max(prefix of its tasks) + sum(seconds - prefix) when fused, and
plain sum(seconds) otherwise (prefix taken as 0), so one search serves both modes.
The start is list scheduling plus local search (moves and swaps off the busiest
device); the search then proves that start optimal or beats it. If the cap is hit,
the best assignment found so far is returned with `optimal=False`.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence

from greenkd.schedule.core import TaskCost, lower_bound


class _Timeout(Exception):
    pass


class _ReachedBound(Exception):
    pass


def _group_load(group: Sequence[int], pre: Sequence[float], own: Sequence[float]) -> float:
    if not group:
        return 0.0
    return max(pre[i] for i in group) + sum(own[i] for i in group)


def list_schedule(pre: Sequence[float], own: Sequence[float], n: int) -> list[list[int]]:
    """LPT: longest task first, each onto the device whose load grows least (fuse-aware)."""
    groups: list[list[int]] = [[] for _ in range(n)]
    maxpre = [0.0] * n
    ownsum = [0.0] * n
    for i in sorted(range(len(own)), key=lambda i: (-(pre[i] + own[i]), i)):
        d = min(range(n), key=lambda d: (max(maxpre[d], pre[i]) + ownsum[d] + own[i], d))
        groups[d].append(i)
        maxpre[d] = max(maxpre[d], pre[i])
        ownsum[d] += own[i]
    return groups


def _best_split(
    tasks: Sequence[int], pre: Sequence[float], own: Sequence[float]
) -> tuple[float, list[int], list[int]]:
    """Exact two-device split of `tasks` (all 2^(k-1) ways): (max load, side a, side b)."""
    k = len(tasks)
    full = (1 << k) - 1
    own_of = [0.0] * (1 << k)
    pre_of = [0.0] * (1 << k)
    for mask in range(1, 1 << k):
        low = mask & -mask
        i = tasks[low.bit_length() - 1]
        rest = mask ^ low
        own_of[mask] = own_of[rest] + own[i]
        pre_of[mask] = max(pre_of[rest], pre[i])
    best = (float("inf"), 0)
    # The first task stays on side a: the mirrored split is the same split.
    for mask in range(1, 1 << k, 2):
        other = full ^ mask
        val = max(own_of[mask] + pre_of[mask], own_of[other] + pre_of[other])
        if val < best[0]:
            best = (val, mask)
    mask = best[1]
    side_a = [t for b, t in enumerate(tasks) if mask >> b & 1]
    side_b = [t for b, t in enumerate(tasks) if not mask >> b & 1]
    return best[0], side_a, side_b


def _best_move_or_swap(
    group_d: list[int], group_e: list[int], pre: Sequence[float], own: Sequence[float]
) -> tuple[float, list[int], list[int]]:
    """Best single move from d to e or swap between them: (max load, new d, new e)."""
    best = (max(_group_load(group_d, pre, own), _group_load(group_e, pre, own)), group_d, group_e)
    for t in group_d:
        rest_d = [i for i in group_d if i != t]
        options = [(rest_d, [*group_e, t])]
        options += [([*rest_d, u], [*(i for i in group_e if i != u), t]) for u in group_e]
        for new_d, new_e in options:
            val = max(_group_load(new_d, pre, own), _group_load(new_e, pre, own))
            if val < best[0]:
                best = (val, new_d, new_e)
    return best


# Pairs of devices holding at most this many tasks together are rebalanced exactly.
_EXACT_PAIR_TASKS = 14


def improve(
    groups: list[list[int]],
    pre: Sequence[float],
    own: Sequence[float],
    tol: float = 1e-9,
    deadline: float = float("inf"),
) -> list[list[int]]:
    """Local search: rebalance pairs of devices, busiest first, while that lowers the pair's max.

    Small pairs are split exactly, larger ones by the best move or swap. Each accepted
    step lowers the sorted load vector lexicographically, so the search ends.
    """
    groups = [list(g) for g in groups]
    loads = [_group_load(g, pre, own) for g in groups]
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        # Busiest devices first: their pairs are the ones that can lower the makespan.
        ranked = sorted(range(len(groups)), key=lambda d: -loads[d])
        for a, d in enumerate(ranked):
            for e in ranked[a + 1 :]:
                union = groups[d] + groups[e]
                if len(union) <= _EXACT_PAIR_TASKS:
                    val, new_d, new_e = _best_split(union, pre, own)
                else:
                    val, new_d, new_e = _best_move_or_swap(groups[d], groups[e], pre, own)
                if val < loads[d] - tol * max(1.0, loads[d]):
                    groups[d], groups[e] = new_d, new_e
                    loads[d], loads[e] = _group_load(new_d, pre, own), _group_load(new_e, pre, own)
                    improved = True
                    break
            if improved:
                break
    return groups


def strong_lower_bound(pre: Sequence[float], own: Sequence[float], n: int, base: float) -> float:
    """`base` raised by the pigeonhole bound: of the k*n+1 largest tasks, one device gets k+1.

    This is what proves 16 near-equal tasks on 3 devices need 6 tasks on one device.
    """
    m = len(own)
    ranked = sorted(range(m), key=lambda i: -own[i])
    best = base
    k = 1
    while k * n + 1 <= m:
        top = ranked[: k * n + 1]
        smallest = top[-(k + 1) :]
        best = max(best, sum(own[i] for i in smallest) + min(pre[i] for i in top))
        k += 1
    return best


def _branch_and_bound(
    pre: Sequence[float],
    own: Sequence[float],
    n: int,
    upper: float,
    root_lb: float,
    deadline: float,
    rel_gap: float,
) -> tuple[list[list[int]] | None, bool]:
    """Depth-first search for an assignment better than `upper`; (groups or None, proven)."""
    m = len(own)
    # Deepest prefix first: once a device holds a task, later tasks never raise its prefix,
    # so they cost exactly their own seconds there and the bounds below are tight.
    order = sorted(range(m), key=lambda i: (-pre[i], -own[i], i))
    sorted_pre = [pre[i] for i in order]
    sorted_own = [own[i] for i in order]
    suffix_own = [0.0] * (m + 1)
    for k in range(m - 1, -1, -1):
        suffix_own[k] = suffix_own[k + 1] + sorted_own[k]
    # smallest_sums[k][t]: the t smallest own seconds among tasks k.. added up
    smallest_sums = []
    for k in range(m + 1):
        sums = [0.0]
        for o in sorted(sorted_own[k:]):
            sums.append(sums[-1] + o)
        smallest_sums.append(sums)
    least_pre = sorted_pre[-1]
    total_own = suffix_own[0]
    tol = max(1e-9, rel_gap) * max(1.0, upper)
    maxpre = [0.0] * n
    ownsum = [0.0] * n
    count = [0] * n
    where = [0] * m
    best = upper
    best_where: list[int] | None = None
    nodes = 0

    def cannot_fit(k: int, limit: float) -> bool:
        # The remaining tasks must fit under `limit`. By seconds: room smaller than the
        # smallest remaining task is wasted, and an empty device first pays a prefix.
        # By count: each device takes at most as many tasks as its room holds of the
        # smallest remaining ones (what proves near-equal tasks need one more somewhere).
        sums = smallest_sums[k]
        smallest = sums[1]
        room = 0.0
        fits = 0
        for d in range(n):
            r = limit - (maxpre[d] + ownsum[d] if count[d] else least_pre)
            if r >= smallest:
                room += r
                fits += max(0, bisect.bisect_left(sums, r) - 1)  # sums[t] < r
        return fits < m - k or (suffix_own[k] > 0 and suffix_own[k] >= room)

    def dfs(k: int, sum_maxpre: float) -> None:
        nonlocal best, best_where, nodes
        if k == m:
            best = max(maxpre[d] + ownsum[d] for d in range(n))
            best_where = where.copy()
            if best <= root_lb + tol:
                raise _ReachedBound
            return
        nodes += 1
        if nodes & 1023 == 0 and time.perf_counter() > deadline:
            raise _Timeout
        p, o = sorted_pre[k], sorted_own[k]
        candidates = []
        seen = set()
        for d in range(n):
            state = (maxpre[d], ownsum[d], count[d] > 0)
            if state in seen:  # identical devices: trying one is enough
                continue
            seen.add(state)
            candidates.append((max(maxpre[d], p) + ownsum[d] + o, d))
        candidates.sort()
        for new_load, d in candidates:
            limit = best - tol
            if new_load >= limit:
                break
            old_pre, old_count = maxpre[d], count[d]
            new_pre = max(old_pre, p)
            new_sum_maxpre = sum_maxpre - old_pre + new_pre
            if (total_own + new_sum_maxpre) / n >= limit:
                continue
            maxpre[d], count[d] = new_pre, old_count + 1
            ownsum[d] += o
            where[k] = d
            if k + 1 == m or not cannot_fit(k + 1, limit):
                dfs(k + 1, new_sum_maxpre)
            maxpre[d], count[d] = old_pre, old_count
            ownsum[d] -= o

    try:
        dfs(0, 0.0)
        proven = True
    except _ReachedBound:
        proven = True
    except _Timeout:
        proven = False
    if best_where is None:
        return None, proven
    groups: list[list[int]] = [[] for _ in range(n)]
    for k, d in enumerate(best_where):
        groups[d].append(order[k])
    return groups, proven


def optimal_groups(
    costs: Sequence[TaskCost], n: int, fused: bool, time_limit_s: float, rel_gap: float = 1e-4
) -> tuple[list[list[int]], bool]:
    """Minimum-makespan assignment of task indices to n devices; (groups, proven optimal)."""
    m = len(costs)
    pre = [c.prefix_seconds if fused else 0.0 for c in costs]
    own = [c.seconds - p for c, p in zip(costs, pre, strict=True)]
    # More devices than tasks never help: one task per device is already optimal.
    used = min(n, m)
    deadline = time.perf_counter() + time_limit_s
    start = improve(list_schedule(pre, own, used), pre, own, deadline=deadline)
    upper = max(_group_load(g, pre, own) for g in start)
    root_lb = strong_lower_bound(pre, own, used, lower_bound(costs, used, fused))
    if upper <= root_lb * (1 + rel_gap):
        groups, proven = start, True
    else:
        found, proven = _branch_and_bound(pre, own, used, upper, root_lb, deadline, rel_gap)
        groups = found if found is not None else start
    groups = [sorted(g) for g in groups] + [[] for _ in range(n - used)]
    return groups, proven
