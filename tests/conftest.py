"""Shared fixtures: a private cache for the whole session and a tiny trained teacher."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Bytecode as on a user's machine: a sandbox may set PYTHONDONTWRITEBYTECODE (this project's CI
# machine does), and then every process a test starts compiles greenkd and its tests from source:
# ~1 CPU s for each process that loads a run (6.0-6.3 against 5.0-5.3 s for the imports on a
# 2-core AMD EPYC), in a suite that starts ~190 processes. Set before the xdist workers start, so
# they and every process below them inherit it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# XLA's code generation at LLVM optimisation level 0 in every process of the suite (JAX's, and
# TensorFlow's under --jit on): the tests prove what greenkd computes and where, not how fast
# XLA's generated code runs, and most of a JAX test's time on these tiny models is compiling
# (jax.random.uniform of each new weight shape took 0.2-0.9 s to compile at the default level,
# 0.17 s at level 0; the JAX default distill took 80 s, 59 s at level 0). The code under test is
# unchanged: greenkd appends its own flags to these (devices.framework_env). Benchmarks and
# users' runs keep XLA's default.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

# One TensorFlow pool thread per process, unless greenkd sizes the pools itself (a worker's
# device does, through the same variables: devices.py). The suite runs two xdist workers on two
# cores, each with a run's parent or a test's own training in it; sized for the whole machine,
# every such process's pools competed with the other's for both cores. A teacher's training
# beside a busy core, 3 alternating pairs: 14.9-17.5 CPU s with TensorFlow's default, 12.7-15.5 s
# with one thread (docs/performance.md). Users' runs keep TensorFlow's default.
for _pool in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_pool, "1")

# tests/chromium.py is both imported (its skip mark) and a plugin (its fixture): rewrite it first
pytest.register_assert_rewrite("chromium")


@pytest.fixture(scope="session", autouse=True)
def greenkd_cache(tmp_path_factory) -> Path:
    """A private GREENKD_CACHE for every test and every subprocess they start."""
    root = tmp_path_factory.mktemp("greenkd-cache")
    old = os.environ.get("GREENKD_CACHE")
    os.environ["GREENKD_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("GREENKD_CACHE", None)
    else:
        os.environ["GREENKD_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory):
    """A run small enough for tests: VGG16 at width 1/16 on 1024 synthetic images."""
    from greenkd.config import RunConfig

    return RunConfig(
        width=1 / 16,
        n_train=1024,
        n_val=256,
        teacher_epochs=8,
        epochs=2,
        finetune_epochs=1,
        batch_size=32,
        acceptance="threshold",  # the paper's per-block rule: no selection fine-tunes in tests
        # every one of the 13 convs a task, as the tests that index them expect (at width 1/16
        # the first three blocks are larger than their convs and would be skipped by default)
        replace_growing=True,
        out=str(tmp_path_factory.mktemp("run")),
    )


@pytest.fixture(scope="session")
def tiny_setup(tiny_cfg, greenkd_cache):
    """Data, trained teacher (cached for the session) and targets of the tiny run."""
    from greenkd.distill.setup import prepare

    return prepare(tiny_cfg)
