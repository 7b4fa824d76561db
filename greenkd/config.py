"""Run configuration: one frozen dataclass per run, range/list parsing, JSON round trip.

A `RunConfig` is built in one place (the CLI or a sweep), written to
`config.json` in every run directory, and read back by workers, analysis and
reports. No dicts of options are threaded through the library.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenkd.errors import GreenkdError
from greenkd.fileio import write_json_atomic

SCHEDULERS = ("rr", "binpack", "ws", "opt")
BACKENDS = ("local", "mpi", "dask")
BLOCKS = ("a", "b", "c", "d")


@dataclass(frozen=True)
class DataThreads:
    """tf.data thread settings (paper §4.3).

    `parallel_calls=None` means AUTOTUNE; the paper's fix for contention is a
    fixed number of parallel calls with `max_intra_op_parallelism=1`.
    """

    parallel_calls: int | None = None
    max_intra_op_parallelism: int | None = None
    private_threadpool_size: int | None = None

    @property
    def label(self) -> str:
        if self.parallel_calls is None and self.max_intra_op_parallelism is None:
            return (
                "autotune"
                if self.private_threadpool_size is None
                else (f"autotune-pool{self.private_threadpool_size}")
            )
        parts = [str(self.parallel_calls) if self.parallel_calls else "autotune"]
        if self.max_intra_op_parallelism is not None:
            parts.append(f"intra{self.max_intra_op_parallelism}")
        if self.private_threadpool_size is not None:
            parts.append(f"pool{self.private_threadpool_size}")
        return "-".join(parts)

    @classmethod
    def parse(cls, text: str | int) -> DataThreads:
        """`autotune` (TensorFlow's default) or `N`: N parallel calls, intra-op 1 (the paper's fix)."""
        value = str(text).strip().lower()
        if value in ("autotune", "auto"):
            return cls()
        if value.isdigit() and int(value) > 0:
            return cls(parallel_calls=int(value), max_intra_op_parallelism=1)
        raise GreenkdError(
            f"data threads {text!r} is not 'autotune' or a positive number of parallel calls"
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one distillation run."""

    # teacher and data
    model: str = "vgg16"  # zoo name (vgg16, resnet50) or a path to a .keras file
    width: float = 0.125  # vgg16 channel multiplier; 1.0 is the paper's model
    dataset: str = "synthetic"
    data_dir: str | None = None
    n_train: int | None = None  # synthetic/digits: images generated or kept; None = dataset default
    n_val: int | None = None
    image_size: int = 32
    preprocess: str | None = None  # None = the model's own preprocessing
    augment: bool = True
    batch_size: int = 64
    teacher_epochs: int = 6
    # layer tasks (paper §3.1, §4.1.6)
    block: str = "a"
    epochs: int = 6
    eval_every: int = 2
    lr: float = 1e-2  # RMSprop, decayed exponentially to lr * lr_end_factor over the epochs
    lr_end_factor: float = 0.03
    accept_max_drop: float | None = 0.02  # accept a block if spliced top-1 >= teacher - this
    accept_min_accuracy: float | None = None  # or an absolute top-1 floor
    # assembly and fine-tuning
    finetune_epochs: int = 2
    finetune_lr: float = 0.003
    freeze_1x1: bool = False
    # parallelism
    gpus: int = 1  # devices: GPUs where there are GPUs, else CPU core sets
    sched: str = "rr"
    backend: str = "local"
    fuse: bool = True  # one teacher pass per batch for all of a worker's tasks; False = the paper's
    data_threads: DataThreads = field(default_factory=DataThreads)
    timings: str | None = None
    allow_oversubscribe: bool = False
    cores_per_device: int | None = None  # CPU devices: cores each; None = the machine split n ways
    calibrate: bool = False  # time a few steps of each task when no measured times exist
    scheduler_address: str | None = None  # dask: an existing scheduler; None = a local cluster
    seed: int = 0
    out: str = "runs/latest"

    def __post_init__(self) -> None:
        if isinstance(self.data_threads, dict):
            object.__setattr__(self, "data_threads", DataThreads(**self.data_threads))
        self.validate()

    def validate(self) -> None:
        """Raise GreenkdError, naming the flag, for any value out of range."""
        checks = [
            (self.width > 0, f"--width must be > 0, got {self.width}"),
            (self.image_size >= 32, f"--image-size must be >= 32, got {self.image_size}"),
            (self.batch_size > 0, f"--batch-size must be > 0, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.eval_every >= 1, f"--eval-every must be >= 1, got {self.eval_every}"),
            (self.teacher_epochs >= 1, f"--teacher-epochs must be >= 1, got {self.teacher_epochs}"),
            (
                self.finetune_epochs >= 0,
                f"--finetune-epochs must be >= 0, got {self.finetune_epochs}",
            ),
            (self.gpus >= 1, f"--gpus must be >= 1, got {self.gpus}"),
            (
                self.cores_per_device is None or self.cores_per_device >= 1,
                f"--cores-per-device must be >= 1, got {self.cores_per_device}",
            ),
            (self.lr > 0 and self.finetune_lr > 0, "learning rates must be > 0"),
            (
                0 < self.lr_end_factor <= 1,
                f"--lr-end-factor must be in (0, 1], got {self.lr_end_factor}",
            ),
            (
                self.block in BLOCKS,
                f"--block must be one of {', '.join(BLOCKS)}, got {self.block!r}",
            ),
            (
                self.sched in SCHEDULERS,
                f"unknown scheduler {self.sched!r}: use one of {', '.join(SCHEDULERS)}",
            ),
            (
                self.backend in BACKENDS,
                f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}",
            ),
        ]
        if self.accept_max_drop is not None:
            checks.append(
                (
                    0 <= self.accept_max_drop <= 1,
                    f"--max-drop must be between 0 and 1 (a fraction of top-1), got {self.accept_max_drop}",
                )
            )
        if self.accept_min_accuracy is not None:
            checks.append(
                (
                    0 <= self.accept_min_accuracy <= 1,
                    f"--min-accuracy must be between 0 and 1, got {self.accept_min_accuracy}",
                )
            )
        for n, name in ((self.n_train, "--n-train"), (self.n_val, "--n-val")):
            if n is not None:
                checks.append((n > 0, f"{name} must be > 0, got {n}"))
        for ok, message in checks:
            if not ok:
                raise GreenkdError(message)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GreenkdError(f"unknown run settings: {', '.join(unknown)}")
        return cls(**data)

    def write(self, path: str | Path, **extra: Any) -> None:
        """Write config.json: the settings plus `extra` (version, host) under `meta`."""
        payload = {"config": self.to_dict(), "meta": extra}
        write_json_atomic(path, payload)

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        try:
            payload = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise GreenkdError(f"no run configuration at {path}") from None
        except json.JSONDecodeError as exc:
            raise GreenkdError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(payload.get("config", payload))


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_int_list(text: str | int | Iterable[int], *, what: str = "devices") -> list[int]:
    """Parse `1-4`, `1,2,4` or `2` into a sorted list of distinct positive ints.

    `0`, `4-1` and non-numbers are user errors.
    """
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str):
        return parse_int_list(",".join(str(int(v)) for v in text), what=what)
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise GreenkdError(f"empty entry in {what} list {text!r}")
        match = _RANGE.match(part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if lo > hi:
                raise GreenkdError(f"{what} range {part!r} runs backwards; write {hi}-{lo}")
            values.update(range(lo, hi + 1))
        elif part.isdigit():
            values.add(int(part))
        else:
            raise GreenkdError(f"{what} {part!r} is not a number or a range like 1-4")
    if 0 in values:
        raise GreenkdError(f"{what} must be >= 1, got 0 in {text!r}")
    return sorted(values)


def parse_choice_list(text: str | Iterable[str], choices: Iterable[str], *, what: str) -> list[str]:
    """Parse `binpack,rr` into a list, keeping order, rejecting unknown names."""
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    allowed = list(choices)
    out: list[str] = []
    for item in items:
        if item not in allowed:
            raise GreenkdError(f"unknown {what} {item!r}: use one of {', '.join(allowed)}")
        if item not in out:
            out.append(item)
    if not out:
        raise GreenkdError(f"no {what} given")
    return out


# ----------------------------------------------------------------------------- sweeps

# What `greenkd sweep` runs with no arguments; experiments/default.toml holds the same values
# (a test checks they agree) so the installed package works without the repository.
DEFAULT_SWEEP_RUN = RunConfig(
    model="vgg16",
    width=0.125,
    dataset="synthetic",
    n_train=2000,
    n_val=500,
    batch_size=64,
    teacher_epochs=12,
    epochs=2,
    eval_every=2,
    lr=0.03,
    finetune_epochs=3,
)
DEFAULT_SWEEP_DESCRIPTION = (
    "The small embedded sweep: VGG16 at width 1/8 on synthetic 32x32 shapes, "
    "1 and 2 devices, round robin and bin packing, tf.data autotune and 1 thread."
)
# Grid axes and sweep-level settings live in [sweep]; the RunConfig fields they set are not [run] keys.
_SWEEP_KEYS = (
    "gpus",
    "sched",
    "data_threads",
    "repeat",
    "backend",
    "idle_seconds",
    "hz",
    "allow_oversubscribe",
)
_NOT_RUN_KEYS = (
    "gpus",
    "sched",
    "data_threads",
    "backend",
    "allow_oversubscribe",
    "out",
    "cores_per_device",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SweepRun:
    """One planned run of a sweep: its stable name, its full RunConfig and where it sits in the grid."""

    name: str
    config: RunConfig
    devices: int
    sched: str  # the scheduler of the config; a shared 1-device run serves every scheduler
    threads: str  # the thread setting's label (DataThreads.label)
    repeat: int
    baseline_for: tuple[str, ...] = ()  # schedulers a shared 1-device run is the baseline of

    def meta(self, sweep: str) -> dict[str, Any]:
        """What the sweep adds to the run's config.json `meta` (the analysis reads it)."""
        return {
            "sweep": sweep,
            "run": self.name,
            "repeat": self.repeat,
            "data_threads_label": self.threads,
            "baseline_for": list(self.baseline_for),
        }


@dataclass(frozen=True)
class SweepSpec:
    """A grid of distillation runs: device counts x schedulers x tf.data threads x repeats over one RunConfig."""

    name: str = "default"
    description: str = DEFAULT_SWEEP_DESCRIPTION
    devices: tuple[int, ...] = (1, 2)
    scheds: tuple[str, ...] = ("rr", "binpack")
    data_threads: tuple[DataThreads, ...] = (DataThreads(), DataThreads.parse(1))
    repeat: int = 1
    backend: str = "local"
    idle_seconds: float = 0.0  # profiler idle baseline before each run
    hz: float = 1.0
    allow_oversubscribe: bool = False
    run: RunConfig = DEFAULT_SWEEP_RUN  # every other run setting
    experiment: str | None = field(default=None, compare=False)  # the TOML it came from

    def __post_init__(self) -> None:
        checks = [
            (
                bool(_NAME.match(self.name)),
                f"sweep name {self.name!r} must be letters, digits, '.', '_' or '-' (a directory name)",
            ),
            (
                bool(self.devices) and min(self.devices) >= 1,
                f"device counts must be >= 1, got {self.devices}",
            ),
            (bool(self.scheds), "no scheduler given"),
            (bool(self.data_threads), "no data-threads setting given"),
            (self.repeat >= 1, f"--repeat must be >= 1, got {self.repeat}"),
            (
                self.backend in BACKENDS,
                f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}",
            ),
            (self.idle_seconds >= 0, f"--idle-seconds must be >= 0, got {self.idle_seconds}"),
            (self.hz > 0, f"--hz must be > 0, got {self.hz}"),
        ]
        for sched in self.scheds:
            checks.append(
                (
                    sched in SCHEDULERS,
                    f"unknown scheduler {sched!r}: use one of {', '.join(SCHEDULERS)}",
                )
            )
        for ok, message in checks:
            if not ok:
                raise GreenkdError(message)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        experiment: str | Path | None = None,
        *,
        gpus: str | None = None,
        sched: str | None = None,
        data_threads: str | None = None,
        backend: str | None = None,
        repeat: int | None = None,
        name: str | None = None,
        idle_seconds: float | None = None,
        allow_oversubscribe: bool | None = None,
    ) -> SweepSpec:
        """The spec from an experiment TOML (or the built-in default), then every flag given over it."""
        spec = cls() if experiment is None else cls.from_toml(resolve_experiment(experiment))
        changes: dict[str, Any] = {}
        if gpus is not None:
            changes["devices"] = tuple(parse_int_list(gpus, what="--gpus"))
        if sched is not None:
            changes["scheds"] = tuple(parse_choice_list(sched, SCHEDULERS, what="scheduler"))
        if data_threads is not None:
            changes["data_threads"] = _parse_threads(data_threads)
        for key, value in (
            ("backend", backend),
            ("repeat", repeat),
            ("name", name),
            ("idle_seconds", idle_seconds),
            ("allow_oversubscribe", allow_oversubscribe),
        ):
            if value is not None:
                changes[key] = value
        return dataclasses.replace(spec, **changes) if changes else spec

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """Read an experiment file: top-level name/description, a [sweep] grid and [run] settings."""
        import tomllib

        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise GreenkdError(f"no experiment file at {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GreenkdError(f"{path} is not valid TOML: {exc}") from None
        try:
            return cls.from_mapping(data, default_name=path.stem, experiment=str(path))
        except GreenkdError as exc:
            raise GreenkdError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(
        cls, data: dict[str, Any], *, default_name: str = "sweep", experiment: str | None = None
    ) -> SweepSpec:
        """A spec from the TOML layout (also what `to_dict` writes)."""
        unknown = sorted(set(data) - {"name", "description", "sweep", "run"})
        if unknown:
            raise GreenkdError(
                f"unknown keys {', '.join(unknown)}: use name, description, [sweep] and [run]"
            )
        grid = dict(data.get("sweep") or {})
        run = dict(data.get("run") or {})
        bad = sorted(set(grid) - set(_SWEEP_KEYS))
        if bad:
            raise GreenkdError(
                f"unknown [sweep] keys {', '.join(bad)}: use {', '.join(_SWEEP_KEYS)}"
            )
        misplaced = sorted(set(run) & set(_NOT_RUN_KEYS))
        if misplaced:
            raise GreenkdError(
                f"set {', '.join(misplaced)} under [sweep], not [run] (the sweep sets them per run)"
            )
        values: dict[str, Any] = {
            "name": str(data.get("name") or default_name),
            "description": str(data.get("description") or ""),
            "run": RunConfig.from_dict(run),
            "experiment": experiment,
        }
        if "gpus" in grid:
            values["devices"] = tuple(parse_int_list(_as_text(grid["gpus"]), what="gpus"))
        if "sched" in grid:
            values["scheds"] = tuple(
                parse_choice_list(_as_text(grid["sched"]), SCHEDULERS, what="scheduler")
            )
        if "data_threads" in grid:
            values["data_threads"] = _parse_threads(grid["data_threads"])
        for key, kind in (
            ("repeat", int),
            ("backend", str),
            ("idle_seconds", float),
            ("hz", float),
            ("allow_oversubscribe", bool),
        ):
            if key in grid:
                value = grid[key]
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                    raise GreenkdError(f"[sweep] {key} must be a {kind.__name__}, got {value!r}")
                values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout as a dict (sweep.json stores it; `from_mapping` reads it back)."""
        run = self.run.to_dict()
        for key in _NOT_RUN_KEYS:
            run.pop(key, None)
        return {
            "name": self.name,
            "description": self.description,
            "sweep": {
                "gpus": list(self.devices),
                "sched": list(self.scheds),
                "data_threads": [_threads_text(t) for t in self.data_threads],
                "repeat": self.repeat,
                "backend": self.backend,
                "idle_seconds": self.idle_seconds,
                "hz": self.hz,
                "allow_oversubscribe": self.allow_oversubscribe,
            },
            "run": run,
        }

    # ------------------------------------------------------------------ the grid

    def expand(
        self, sweep_dir: str | Path, *, cores_per_device: int | None = None
    ) -> list[SweepRun]:
        """Every run in order: repeat, threads, device count, scheduler; names like `g2-binpack-t4-r0`.

        A 1-device run is the same whatever the scheduler, so it runs once per thread setting
        and repeat (`g1-t4-r0`), configured with the first scheduler, and is every scheduler's
        baseline. `cores_per_device` makes a CPU device the same size at every device count.
        """
        sweep_dir = Path(sweep_dir)
        runs: list[SweepRun] = []
        for repeat in range(self.repeat):
            for threads in self.data_threads:
                token = _threads_text(threads).replace("autotune", "auto")
                for n in sorted(self.devices):
                    scheds = self.scheds[:1] if n == 1 else self.scheds
                    for sched in scheds:
                        name = (
                            f"g1-t{token}-r{repeat}"
                            if n == 1
                            else f"g{n}-{sched}-t{token}-r{repeat}"
                        )
                        config = self.run.replace(
                            gpus=n,
                            sched=sched,
                            data_threads=threads,
                            backend=self.backend,
                            allow_oversubscribe=self.allow_oversubscribe,
                            cores_per_device=cores_per_device,
                            out=str(sweep_dir / name),
                        )
                        runs.append(
                            SweepRun(
                                name,
                                config,
                                n,
                                sched,
                                threads.label,
                                repeat,
                                baseline_for=self.scheds if n == 1 else (),
                            )
                        )
        return runs


def resolve_experiment(experiment: str | Path) -> Path:
    """An experiment file: a path, or a preset name looked up in ./experiments and the source tree's."""
    path = Path(experiment)
    if path.suffix == ".toml" or path.is_file() or "/" in str(experiment):
        if not path.is_file():
            raise GreenkdError(f"no experiment file at {path}")
        return path
    for folder in (Path("experiments"), Path(__file__).resolve().parent.parent / "experiments"):
        candidate = folder / f"{experiment}.toml"
        if candidate.is_file():
            return candidate
    raise GreenkdError(
        f"no experiment {experiment!r}: give a .toml path or a preset name from experiments/"
    )


def _as_text(value: Any) -> str:
    """A TOML value that may be a string, a number or a list, as the comma-separated text flags use."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _parse_threads(value: Any) -> tuple[DataThreads, ...]:
    parts = _as_text(value).split(",")
    out: list[DataThreads] = []
    for part in parts:
        if not part.strip():
            raise GreenkdError(f"empty entry in data-threads list {_as_text(value)!r}")
        threads = DataThreads.parse(part)
        if threads not in out:
            out.append(threads)
    return tuple(out)


def _threads_text(threads: DataThreads) -> str:
    """`autotune` or the number of parallel calls, as flags and TOML write it."""
    if threads == DataThreads():
        return "autotune"
    if (
        threads.max_intra_op_parallelism == 1
        and threads.private_threadpool_size is None
        and threads.parallel_calls
    ):
        return str(threads.parallel_calls)
    raise GreenkdError(f"a sweep takes data threads 'autotune' or N, not {threads.label!r}")
