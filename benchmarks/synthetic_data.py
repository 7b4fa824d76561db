"""Drawing the synthetic images: this tree's `greenkd.data.synthetic_images` against a git
revision's, side by side in one process (interleaved rounds), and whether both draw the same bytes.

    python benchmarks/synthetic_data.py --rev fce64b4 --n 4000 --rounds 7
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from greenkd import data as current
from profilers.sensors.topology import read_cpu_model


def _module_at(rev: str):
    """`greenkd/data.py` as it was at `rev`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:greenkd/data.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "data_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("data_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["data_at_rev"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="fce64b4", help="the revision to compare with")
    parser.add_argument(
        "--n", type=int, default=4000, help="images (the default run's train split)"
    )
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    before = _module_at(args.rev)
    times: dict[str, list[float]] = {args.rev: [], "this tree": []}
    for _ in range(args.rounds):
        for name, module in ((args.rev, before), ("this tree", current)):
            start = time.perf_counter()
            module.synthetic_images(args.n, 0)
            times[name].append(time.perf_counter() - start)
    a, b = before.synthetic_images(args.n, 0), current.synthetic_images(args.n, 0)
    same = np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    old, new = statistics.median(times[args.rev]), statistics.median(times["this tree"])
    print(f"CPU: {read_cpu_model()}; {args.n} images, median of {args.rounds} interleaved rounds")
    print("| drawing | median s | ratio |\n|---|---|---|")
    print(f"| {args.rev} | {old:.3f} | 1.00 |\n| this tree | {new:.3f} | {new / old:.2f} |")
    print(f"same bytes: {same}")


if __name__ == "__main__":
    main()
