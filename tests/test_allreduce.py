"""The local workers' shared-memory all-reduce (greenkd.executors.allreduce), between real
processes: the sums every rank gets, in rank order, and a job the run stops while one waits."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil

import numpy as np
import pytest

from greenkd.executors import allreduce

SIZE = 3
CALLS = 40  # gradients of two layouts taking turns, a call ahead and behind each other


def _arrays(rank: int, call: int) -> list[np.ndarray]:
    rng = np.random.default_rng([rank, call])
    grads = rng.standard_normal(1000 + 7 * (call % 2)).astype(np.float32)  # two layouts
    counts = np.array([rank + call], np.float64)
    stats = rng.integers(-5, 5, size=(3, 5)).astype(np.int64)
    return [grads, counts, stats]


def _rank(directory, rank: int, conn, out) -> None:
    reduce = allreduce.SharedReduce(directory, rank, SIZE, conn)
    sums = [reduce(_arrays(rank, call)) for call in range(CALLS)]
    reduce.close()
    out.put((rank, sums))


def test_every_rank_gets_the_rank_ordered_sums_of_every_call():
    directory = allreduce.make_directory()
    bells = allreduce.make_pipes(directory, SIZE)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    pipes = [ctx.Pipe() for _ in range(SIZE)]
    ranks = [ctx.Process(target=_rank, args=(directory, r, pipes[r][1], out)) for r in range(SIZE)]
    try:
        for p in ranks:
            p.start()
        got = dict(out.get(timeout=120) for _ in range(SIZE))
    finally:
        for p in ranks:
            p.join(timeout=30)
        shutil.rmtree(directory)
    for call in range(CALLS):
        each = [_arrays(r, call) for r in range(SIZE)]
        for i in range(3):
            want = each[0][i].copy()  # rank 0, then 1, then 2: the order the parent summed in
            for r in range(1, SIZE):
                want += each[r][i]
            for r in range(SIZE):
                assert got[r][call][i].dtype == want.dtype
                np.testing.assert_array_equal(got[r][call][i], want)  # bit for bit, every rank
    assert all(p.exitcode == 0 for p in ranks)
    for fd in bells:
        os.close(fd)


def test_a_rank_waiting_for_a_worker_that_never_comes_stops_when_the_run_says_so():
    directory = allreduce.make_directory()
    bells = allreduce.make_pipes(directory, 2)
    mine, parent = mp.Pipe()
    reduce = allreduce.SharedReduce(directory, 0, 2, mine)
    parent.send(("stop",))  # what the run sends its workers once another one died
    try:
        with pytest.raises(RuntimeError, match="stopped this collective job"):
            reduce([np.ones(4, np.float32)])  # rank 1 never rings
    finally:
        reduce.close()
        for fd in bells:
            os.close(fd)
        shutil.rmtree(directory)
