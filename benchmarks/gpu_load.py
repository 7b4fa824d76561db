"""Keep one GPU busy for a given time with matrix products, and say how fast it went.

    python benchmarks/gpu_load.py --seconds 60 [--size 8192] [--dtype bf16]

The load for `benchmarks/device_check.sh`: square bf16 (or fp16) matrix products in a loop on the
first GPU the process sees (CUDA_VISIBLE_DEVICES decides which), synchronised every batch, with
the TFLOP/s reached printed every few seconds. PyTorch if it sees a GPU, else JAX; where neither
does, a short numpy loop on the CPU, said so ("no GPU: dry run"), so the check can be dry-run on
any machine. The last line is `gpu_load result: {json}` (backend, device, its UUID, the load's
start and end in Unix seconds, TFLOP/s, this process's pid), which
`benchmarks/device_check_report.py` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

RESULT_PREFIX = "gpu_load result: "
# Between progress lines; the loop synchronises far more often (every batch).
PROGRESS_S = 10.0


@dataclass
class Backend:
    """One matrix product `step()` on a device, and `sync()` waiting for the products queued."""

    name: str
    device: str
    uuid: str | None
    dtype: str
    size: int
    step: Callable[[], None]
    sync: Callable[[], None]
    # Products queued between two synchronisations: enough to keep the GPU's queue full.
    batch: int


@dataclass
class Result:
    """What the load did: the line `device_check_report.py` reads."""

    backend: str
    device: str
    uuid: str | None
    dtype: str
    size: int
    products: int
    seconds: float
    tflops: float
    start_ts: float
    end_ts: float
    pid: int
    dry_run: bool


def torch_backend(size: int, dtype: str) -> Backend | None:
    """PyTorch on its current CUDA device; None without torch or a GPU it can use."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    kind = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    device = torch.device("cuda", torch.cuda.current_device())
    props = torch.cuda.get_device_properties(device)
    a = torch.randn(size, size, device=device, dtype=kind)
    b = torch.randn(size, size, device=device, dtype=kind)
    c = torch.empty(size, size, device=device, dtype=kind)
    uuid = getattr(props, "uuid", None)
    return Backend(
        name=f"torch {torch.__version__}",
        device=props.name,
        uuid=None if uuid is None else str(uuid),
        dtype=dtype,
        size=size,
        step=lambda: torch.matmul(a, b, out=c),
        sync=torch.cuda.synchronize,
        batch=50,
    )


def jax_backend(size: int, dtype: str) -> Backend | None:
    """JAX on its first GPU; None without jax or a GPU it can use."""
    # Without this JAX takes 75% of the GPU's memory at start.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        return None
    kind = {"bf16": jnp.bfloat16, "fp16": jnp.float16}[dtype]
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.device_put(jax.random.normal(key_a, (size, size), dtype=kind), device)
    b = jax.device_put(jax.random.normal(key_b, (size, size), dtype=kind), device)
    matmul = jax.jit(jnp.matmul)
    last = [matmul(a, b)]

    def step() -> None:
        last[0] = matmul(a, b)

    return Backend(
        name=f"jax {jax.__version__}",
        device=str(getattr(device, "device_kind", device)),
        uuid=None,
        dtype=dtype,
        size=size,
        step=step,
        sync=lambda: last[0].block_until_ready(),
        batch=50,
    )


def _nothing() -> None:
    """The CPU computes synchronously: nothing to wait for."""


def cpu_backend() -> Backend:
    """A small float32 numpy product on the CPU: the dry run where no GPU is seen."""
    try:
        import numpy as np
    except ImportError:  # the loop itself still keeps one core busy
        return Backend("python", "cpu", None, "float", 0, lambda: None, _nothing, 1)
    size = 256
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    return Backend(
        name=f"numpy {np.__version__}",
        device="cpu",
        uuid=None,
        dtype="float32",
        size=size,
        step=lambda: np.matmul(a, b),
        sync=_nothing,
        batch=10,
    )


def run(backend: Backend, seconds: float, *, dry_run: bool) -> Result:
    """Products for `seconds`, after one warm-up batch; prints the TFLOP/s every PROGRESS_S."""
    flops = 2.0 * backend.size**3
    for _ in range(backend.batch):  # compile, allocate, reach full clocks before timing
        backend.step()
    backend.sync()
    start_ts, start = time.time(), time.perf_counter()
    products, shown_products, shown = 0, 0, start
    now = start
    while now - start < seconds:
        for _ in range(backend.batch):
            backend.step()
        backend.sync()
        products += backend.batch
        now = time.perf_counter()
        if now - shown >= PROGRESS_S:
            rate = flops * (products - shown_products) / (now - shown) / 1e12
            print(f"gpu_load: {now - start:6.1f} s  {rate:8.2f} TFLOP/s", flush=True)
            shown_products, shown = products, now
    end_ts = time.time()
    elapsed = now - start
    return Result(
        backend=backend.name,
        device=backend.device,
        uuid=backend.uuid,
        dtype=backend.dtype,
        size=backend.size,
        products=products,
        seconds=elapsed,
        tflops=flops * products / elapsed / 1e12,
        start_ts=start_ts,
        end_ts=end_ts,
        pid=os.getpid(),
        dry_run=dry_run,
    )


def main() -> None:
    """Parse the arguments, pick the backend, run, print the result line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to load the GPU")
    parser.add_argument("--size", type=int, default=8192, help="side of the square matrices")
    parser.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    args = parser.parse_args()

    backend = torch_backend(args.size, args.dtype) or jax_backend(args.size, args.dtype)
    dry_run = backend is None
    if backend is None:
        print(
            "gpu_load: no GPU: dry run (neither PyTorch nor JAX sees a GPU here); "
            f"a {args.seconds:g} s numpy loop on the CPU instead",
            flush=True,
        )
        backend = cpu_backend()
    print(
        f"gpu_load: {backend.name} on {backend.device} (uuid {backend.uuid}), "
        f"{backend.dtype} {backend.size}x{backend.size} products for {args.seconds:g} s, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}",
        flush=True,
    )
    result = run(backend, args.seconds, dry_run=dry_run)
    print(
        f"gpu_load: {result.products} products in {result.seconds:.1f} s: "
        f"{result.tflops:.2f} TFLOP/s",
        flush=True,
    )
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
