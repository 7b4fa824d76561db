"""An NVML stand-in for the processes a test starts: `import pynvml` finds this module first.

Put this folder first on PYTHONPATH and name a JSON file in GREENKD_FAKE_NVML: a list of GPUs,
each `{"uuid": ..., "pci_bus_id": ..., "name": ..., "mig": ..., "mig_devices": [...]}` (any of
them may be left out). Every pynvml function greenkd calls is answered by the same FakeNvml the
profiler tests use in-process (tests/profiler_fakes.py), so the real code that resolves GPUs,
binds workers and samples energy runs unchanged in every process of a run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for profiler_fakes

from profiler_fakes import FakeGpu, FakeNvml

_spec = json.loads(Path(os.environ["GREENKD_FAKE_NVML"]).read_text())
_fake = FakeNvml([FakeGpu(**gpu) for gpu in _spec])
NVMLError = FakeNvml.NVMLError


def __getattr__(name: str):
    return getattr(_fake, name)
