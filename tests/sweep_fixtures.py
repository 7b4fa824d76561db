"""Fixtures for the sweep tests: a private teacher cache, a tiny teacher file and experiment TOMLs.

The sweeps under test are real: `greenkd sweep` in a subprocess, each run a `greenkd distill`
child under the profiler. To keep a run to seconds on 2 cores, most tests distill a three-conv
CNN saved as a .keras file (three layer tasks instead of VGG16's thirteen).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

# n_train / batch_size = 2 steps per epoch: a layer task takes about a second
TINY_RUN = {
    "n_train": 128,
    "n_val": 64,
    "batch_size": 64,
    "epochs": 2,
    "eval_every": 2,
    "finetune_epochs": 1,
    "acceptance": "threshold",  # the per-block rule: target mode would add fine-tunes to each run
    "replace_growing": True,  # three tasks: conv0 (3 -> 8 channels) has a larger block
}


@pytest.fixture(scope="session")
def sweep_cache(tmp_path_factory) -> Path:
    """A GREENKD_CACHE of the sweep tests' own, shared by every sweep they start."""
    return tmp_path_factory.mktemp("sweep-cache")


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A three-conv CNN for 32x32x3 inputs and 10 classes, saved as a .keras teacher file."""
    path = tmp_path_factory.mktemp("teacher") / "tiny.keras"
    code = (
        "import sys; from greenkd.framework import keras; keras.utils.set_random_seed(0)\n"
        "inp = keras.Input((32, 32, 3))\n"
        "x = keras.layers.Rescaling(1 / 255)(inp)\n"
        "for i, f in enumerate((8, 16, 16)):\n"
        "    x = keras.layers.Conv2D(f, 3, padding='same', activation='relu', name=f'conv{i}')(x)\n"
        "    x = keras.layers.MaxPooling2D(name=f'pool{i}')(x)\n"
        "x = keras.layers.GlobalAveragePooling2D()(x)\n"
        "out = keras.layers.Dense(10, activation='softmax')(x)\n"
        "keras.Model(inp, out).save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True)
    return path


def write_experiment(path: Path, *, sweep: dict, run: dict, name: str | None = None) -> Path:
    """An experiment TOML with the given [sweep] and [run] tables (strings, numbers, lists, bools)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f'name = "{name}"'] if name else []
    for table, values in (("sweep", sweep), ("run", run)):
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def greenkd(
    *args: str, cache: Path, cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, with the sweep tests' cache."""
    env = {**os.environ, "GREENKD_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "greenkd", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_greenkd(*args: str, cache: Path, cwd: Path) -> subprocess.Popen:
    """The real CLI started in its own session, so that a signal sent to it reaches it alone."""
    env = {**os.environ, "GREENKD_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-m", "greenkd", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


class Terminal:
    """The real CLI on a pseudo-terminal it controls, as in a shell: `ctrl_c()` types Ctrl-C.

    The kernel then sends SIGINT to the whole foreground process group (the sweep, its running
    distillation and that run's workers), exactly as a person's Ctrl-C does.
    """

    def __init__(self, *args: str, cache: Path, cwd: Path) -> None:
        env = {**os.environ, "GREENKD_CACHE": str(cache), "COLUMNS": "120"}
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenkd", *args],
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the pty becomes its terminal
        )
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)  # a full pty would block it
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO once every process holding the terminal has exited
                return
            if not chunk:
                return
            self.output += chunk

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float) -> tuple[int, str]:
        """The exit code and everything the terminal showed."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
            self._reader.join(timeout=5)
            os.close(self.master)
        return code, self.output.decode(errors="replace")


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folder`: its mtime (ns) and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
